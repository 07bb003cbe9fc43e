#!/usr/bin/env python3
"""Repository health checks, one per agent, each writing a structured result.

    python3 examples/health/check.py lint|tests|todos|history|large-files|report

Each check prints what it did and writes JSON to $SPAWNER_RESULT_FILE (when set):
{"summary": ..., "verdict": "pass"|"warn"|"fail", "findings": [...], "metrics": {...}}.
`report` reads its dependencies' results from $SPAWNER_DEPS_FILE and merges them.
Standard library only, so it runs on a fresh machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

SKIP_DIRS = {".git", ".venv", "node_modules", "__pycache__", "var", ".ruff_cache", ".pytest_cache"}


def nouns(n: int, word: str) -> str:
    """ "1 finding", "3 findings": the noun in the number it takes."""
    return f"{n} {word if n == 1 else word + 's'}"


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], capture_output=True, text=True, check=True).stdout
        return [Path(p) for p in out.splitlines() if Path(p).is_file()]
    except (subprocess.CalledProcessError, FileNotFoundError):
        return [
            Path(root, name)
            for root, dirs, names in os.walk(".")
            if not (dirs.__setitem__(slice(None), [d for d in dirs if d not in SKIP_DIRS]))
            for name in names
        ]


def lint() -> dict:
    if shutil.which("ruff"):
        proc = subprocess.run(["ruff", "check", "--output-format=json", "."], capture_output=True, text=True)
        issues = json.loads(proc.stdout or "[]")
        findings = [
            {
                "severity": "low",
                "title": f"{i['code']} {i['message']}",
                "file": i["filename"],
                "line": i["location"]["row"],
            }  # fmt: skip
            for i in issues
        ]
        tool = "ruff"
    else:
        findings = []
        for path in (p for p in tracked_files() if p.suffix == ".py"):
            try:
                # Compiled in memory: nothing written (py_compile refuses /dev/null as its output).
                compile(path.read_bytes(), str(path), "exec")
            except (SyntaxError, ValueError) as exc:
                findings.append({"severity": "high", "title": "syntax error", "file": str(path), "detail": str(exc)})
        tool = "py_compile (ruff is not installed)"
    verdict = "pass" if not findings else "warn"
    return {"summary": f"{tool}: {nouns(len(findings), 'finding')}", "verdict": verdict, "findings": findings[:200]}


def tests() -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/spawner/test_planning.py"]
    if not Path(cmd[-1]).exists():
        return {"summary": "no unit tests found", "verdict": "warn", "findings": []}
    proc = subprocess.run(cmd, capture_output=True, text=True)
    # What went wrong is said where it was said: pytest's summary, or (pytest missing for this
    # Python, a crash) the last line of its error output, with the interpreter that ran it.
    errors = [f"{line} ({sys.executable})" for line in proc.stderr.strip().splitlines()]
    last = (proc.stdout.strip().splitlines() or errors or ["no output"])[-1]
    print(proc.stdout[-3000:])
    print(proc.stderr[-3000:], file=sys.stderr)
    verdict = "pass" if proc.returncode == 0 else "fail"
    findings = [] if verdict == "pass" else [{"severity": "high", "title": "unit tests fail", "detail": last}]
    return {"summary": f"unit tests: {last}", "verdict": verdict, "findings": findings}


def todos() -> dict:
    pattern = re.compile(r"\b(TODO|FIXME|XXX|HACK)\b")
    findings = []
    for path in tracked_files():
        if path.suffix not in {".py", ".md", ".html", ".js", ".css", ".yaml", ".toml", ".txt"}:
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line) and "check.py" not in str(path):
                findings.append({"severity": "info", "title": line.strip()[:120], "file": str(path), "line": n})
    return {"summary": f"{nouns(len(findings), 'TODO/FIXME marker')}", "verdict": "pass", "findings": findings[:200],
            "metrics": {"todos": len(findings)}}  # fmt: skip


def history() -> dict:
    try:
        log = subprocess.run(["git", "log", "--format=%an|%cs"], capture_output=True, text=True, check=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"summary": "not a git repository", "verdict": "warn", "findings": []}
    rows = [line.split("|", 1) for line in log.splitlines() if "|" in line]
    authors = sorted({a for a, _ in rows})
    last = rows[0][1] if rows else "never"
    return {"summary": f"{len(rows)} commits by {nouns(len(authors), 'author')}, last on {last}", "verdict": "pass",
            "findings": [], "metrics": {"commits": len(rows), "authors": len(authors)}}  # fmt: skip


def large_files(limit: int = 1_000_000) -> dict:
    big = sorted(((p.stat().st_size, p) for p in tracked_files() if p.stat().st_size > limit), reverse=True)
    findings = [{"severity": "medium", "title": f"{size / 1e6:.1f} MB file", "file": str(p)} for size, p in big]
    return {"summary": f"{nouns(len(big), 'tracked file')} over {limit // 1_000_000} MB",
            "verdict": "warn" if big else "pass", "findings": findings}  # fmt: skip


def report() -> dict:
    deps = json.loads(Path(os.environ["SPAWNER_DEPS_FILE"]).read_text())
    order = {"fail": 0, "warn": 1, "pass": 2}
    lines = ["# Repository health", ""]
    findings = []
    for key, dep in sorted(deps.items()):
        result = dep.get("result") or {}
        verdict = result.get("verdict", "fail" if dep["status"] != "succeeded" else "warn")
        lines.append(f"- **{key}** ({verdict}): {dep['summary'] or dep['status']}")
        findings += [{**f, "agent": key} for f in result.get("findings", [])]
    verdicts = [(d.get("result") or {}).get("verdict", "fail") for d in deps.values()]
    overall = min(verdicts, key=lambda v: order.get(v, 0)) if verdicts else "fail"
    lines += ["", f"Overall: **{overall}**, {nouns(len(findings), 'finding')} from {len(deps)} checks."]
    print("\n".join(lines))
    return {"summary": f"health {overall}: {nouns(len(findings), 'finding')} from {len(deps)} checks",
            "verdict": overall, "findings": findings[:500], "report_markdown": "\n".join(lines)}  # fmt: skip


CHECKS = {"lint": lint, "tests": tests, "todos": todos, "history": history, "large-files": large_files,
          "report": report}  # fmt: skip

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CHECKS:
        sys.exit(f"usage: check.py {'|'.join(CHECKS)}")
    result = CHECKS[sys.argv[1]]()
    print(result["summary"])
    if path := os.environ.get("SPAWNER_RESULT_FILE"):
        Path(path).write_text(json.dumps(result, indent=1))
    sys.exit(1 if result["verdict"] == "fail" else 0)
