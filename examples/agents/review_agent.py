#!/usr/bin/env python3
"""A stand-in review agent: reads Python code with one focus and writes a structured result.

    python3 examples/agents/review_agent.py --focus security [PATH ...]
    python3 examples/agents/review_agent.py --focus correctness spawner
    python3 examples/agents/review_agent.py --synthesize        # combines $SPAWNER_DEPS_FILE

It needs no AI tool: simple line rules and the `ast` module find things a reviewer
would mention. What it writes to $SPAWNER_RESULT_FILE is the documented result format:

    {"summary": "...", "verdict": "pass" | "warn" | "fail",
     "findings": [{"severity": "critical|high|medium|low|info", "title": "...",
                   "file": "...", "line": 12, "detail": "..."}],
     "suggestions": ["..."], "tokens": 0, "cost": 0.0}

Without $SPAWNER_RESULT_FILE the JSON goes to stdout. Standard library only.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

SEVERITIES = ("critical", "high", "medium", "low", "info")
FOCUSES = ("security", "correctness", "maintainability")
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", "migrations", ".ruff_cache"}
MODULE_LINES = 400
FUNCTION_LINES = 60

# (focuses, pattern, severity, title, what a reviewer would say). A rule with two focuses is
# reported by both reviewers: the merge aggregation folds it into one finding crediting both.
RULES = [
    (("security",), r"shell\s*=\s*True", "high", "subprocess runs through a shell",
     "A shell parses the command: quoting mistakes become injection. Pass an argv list."),
    (("security",), r"\bos\.system\(", "high", "os.system runs through a shell",
     "Use subprocess.run with an argv list."),
    (("security",), r"(?<![\w.])(eval|exec)\(", "high", "dynamic code execution",
     "eval/exec on anything that is not a constant runs whatever it is given."),
    (("security",), r"\bpickle\.loads?\(", "medium", "unpickling data",
     "Unpickling runs code; only unpickle what this process wrote."),
    (("security",), r"\byaml\.load\(", "medium", "yaml.load without a safe loader", "Use yaml.safe_load."),
    (("security",), r"verify\s*=\s*False", "medium", "TLS verification disabled", "Keep certificate checks on."),
    (("security",), r"""(?i)\b(password|secret|api_key|token)\s*=\s*["'][^"']{8,}["']""", "high",
     "hard-coded secret", "Read secrets from the environment at run time."),
    (("security",), r"#\s*noqa:\s*S\d+", "info", "security lint rule silenced",
     "Fine when the comment says why; worth a second look."),
    (("correctness",), r"except\s*:", "medium", "bare except", "It catches KeyboardInterrupt and SystemExit too."),
    (("correctness", "maintainability"), r"except\s+(Exception|BaseException)\b", "medium",
     "broad exception handler", "A broad handler can hide bugs; log it, re-raise, or catch what you expect."),
    (("correctness",), r"[!=]=\s*None\b", "low", "comparison to None with == or !=", "Use `is None` / `is not None`."),
    (("correctness",), r"def \w+\([^)]*=\s*(\[\]|\{\}|set\(\))", "medium", "mutable default argument",
     "The default is shared between calls; default to None."),
    (("correctness",), r"\btime\.sleep\(", "info", "sleeps while waiting",
     "Polling with sleep adds latency and slows tests; wait on an event if there is one."),
    # The markers are spelled with a class ([O]) so that this file does not report itself.
    (("maintainability",), r"#\s*(T[O]DO|F[I]XME|X[X]X|H[A]CK)\b", "info", "unfinished-work marker",
     "Finish it or file it."),
    (("maintainability",), r"#\s*noqa(?!:)", "low", "blanket noqa", "Name the rule being silenced."),
]  # fmt: skip
ADVICE = {
    "security": "Keep prompts and paths out of shells; read secrets from the environment.",
    "correctness": "Catch the exceptions you expect; compare with None using `is`.",
    "maintainability": f"Keep modules under {MODULE_LINES} lines and functions under {FUNCTION_LINES}.",
}


def nouns(n: int, word: str) -> str:
    """ "1 finding", "3 findings": the noun in the number it takes."""
    return f"{n} {word if n == 1 else word + 's'}"


def python_files(paths: list[str]) -> list[Path]:
    found = []
    for start in map(Path, paths):
        if start.is_file():
            found.append(start)
            continue
        for root, dirs, names in os.walk(start):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            found += [Path(root, n) for n in sorted(names) if n.endswith(".py")]
    return found


def finding(severity: str, title: str, path: Path, line: int | None, detail: str) -> dict:
    return {"severity": severity, "title": title, "file": path.as_posix(), "line": line, "detail": detail}


def line_rules(focus: str, path: Path, lines: list[str]) -> list[dict]:
    rules = [(re.compile(p), s, t, d) for focuses, p, s, t, d in RULES if focus in focuses]
    found = []
    for number, text in enumerate(lines, 1):
        for pattern, severity, title, detail in rules:
            if pattern.search(text):
                found.append(finding(severity, title, path, number, f"{detail}\n    {text.strip()[:160]}"))
    return found


def shape_rules(path: Path, source: str, lines: list[str]) -> list[dict]:
    """Maintainability: long modules and long functions."""
    found = []
    if len(lines) > MODULE_LINES:
        found.append(finding("low", f"module over {MODULE_LINES} lines", path, None,
                             f"{len(lines)} lines: split it so a reader can hold it in their head."))  # fmt: skip
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        return found + [finding("high", "syntax error", path, exc.lineno, str(exc))]
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > FUNCTION_LINES:
                found.append(finding("low", f"function {node.name}() is {length} lines long", path, node.lineno,
                                     "Long functions are hard to test one rule at a time; split it."))  # fmt: skip
    return found


def verdict_of(findings: list[dict]) -> str:
    severities = {f["severity"] for f in findings}
    if severities & {"critical", "high"}:
        return "fail"
    return "warn" if "medium" in severities else "pass"


def counted(findings: list[dict]) -> str:
    by = Counter(f["severity"] for f in findings)
    return ", ".join(f"{by[s]} {s}" for s in SEVERITIES if by[s]) or "nothing to report"


def review(focus: str, paths: list[str]) -> dict:
    files = python_files(paths)
    findings = []
    for path in files:
        source = path.read_text(encoding="utf-8", errors="replace")
        lines = source.splitlines()
        findings += line_rules(focus, path, lines)
        if focus == "maintainability":
            findings += shape_rules(path, source, lines)
    findings.sort(key=lambda f: (SEVERITIES.index(f["severity"]), f["file"], f["line"] or 0))
    titles = Counter(f["title"] for f in findings)
    suggestions = [f"{title} ({n}×)" for title, n in titles.most_common(4)] + [ADVICE[focus]]
    return {
        "summary": f"{focus} review of {nouns(len(files), 'file')}: {counted(findings)}",
        "verdict": verdict_of(findings),
        "findings": findings[:200],
        "suggestions": suggestions,
        "tokens": 0,  # no model was asked: nothing to pay for
        "cost": 0.0,
    }


def synthesize(deps_file: str) -> dict:
    """One prioritised answer from the reviewers' structured results."""
    deps = json.loads(Path(deps_file).read_text())
    distinct: dict[tuple, dict] = {}
    verdicts, missing = [], []
    for key, dep in sorted(deps.items()):
        result = dep.get("result") if isinstance(dep.get("result"), dict) else {}
        if dep.get("status") != "succeeded" or not result:
            missing.append(key)
            continue
        verdicts.append(result.get("verdict") or "warn")
        for f in result.get("findings") or []:
            identity = (f.get("file"), f.get("line"), str(f.get("title", "")).lower())
            kept = distinct.setdefault(identity, {**f, "by": []})
            kept["by"].append(key)
    order = ["fail", "warn", "pass"]
    verdict = min(verdicts + (["warn"] if missing else []), key=lambda v: order.index(v) if v in order else 0,
                  default="fail")  # fmt: skip
    ranked = sorted(distinct.values(), key=lambda f: (SEVERITIES.index(f.get("severity", "info")), -len(f["by"])))
    fix_first = [
        f"{f['severity']}: {f['title']} at {f['file']}{':' + str(f['line']) if f.get('line') else ''}"
        f" (seen by {', '.join(f['by'])})"
        for f in ranked[:5]
    ]
    agreed = sum(1 for f in ranked if len(f["by"]) > 1)
    summary = (f"{nouns(len(verdicts), 'review')} combined: "
               f"{nouns(len(ranked), 'distinct finding')} ({counted(ranked)}), "
               f"{agreed} raised by more than one reviewer; verdict {verdict}")  # fmt: skip
    if missing:
        summary += f"; missing: {', '.join(missing)}"
    lines = ["# Review synthesis", "", summary, "", "## Fix first", ""] + [f"1. {s}" for s in fix_first]
    return {"summary": summary, "verdict": verdict, "findings": [], "suggestions": fix_first,
            "report_markdown": "\n".join(lines), "tokens": 0, "cost": 0.0}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--focus", choices=FOCUSES)
    parser.add_argument("--synthesize", action="store_true", help="combine the results in $SPAWNER_DEPS_FILE")
    parser.add_argument("paths", nargs="*", default=["spawner"])
    args = parser.parse_args(argv)
    if args.synthesize:
        if not os.environ.get("SPAWNER_DEPS_FILE"):
            parser.error("--synthesize reads $SPAWNER_DEPS_FILE, which Spawner sets for tasks with dependencies")
        result = synthesize(os.environ["SPAWNER_DEPS_FILE"])
        print(result["report_markdown"])
    elif args.focus:
        result = review(args.focus, args.paths)
        print(result["summary"])
        for f in result["findings"][:20]:
            print(f"  {f['severity']:<8} {f['file']}:{f['line'] or '-'}  {f['title']}")
    else:
        parser.error("give --focus or --synthesize")
    if path := os.environ.get("SPAWNER_RESULT_FILE"):
        Path(path).write_text(json.dumps(result, indent=1))
    else:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
