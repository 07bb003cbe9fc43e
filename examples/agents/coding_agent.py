#!/usr/bin/env python3
"""A stand-in coding agent: edits files in its working directory as its prompt says.

    echo "append 'print(1)' to app/main.py" | python3 examples/agents/coding_agent.py
    python3 examples/agents/coding_agent.py "create NOTES.md with '# Notes'"

The prompt (standard input, or the arguments joined) holds one instruction per line:

    create FILE with TEXT                  a new file (or replaced whole), TEXT as its only line
    append TEXT to FILE                    TEXT as a new last line
    replace line N of FILE with TEXT       line N (from 1) becomes TEXT
    insert TEXT before line N of FILE      TEXT becomes line N
    delete line N of FILE
    sleep SECONDS                          think for a while (at most 60 s)

TEXT may be quoted ('...' or "..."); `\\n` in it starts a new line. Blank lines and lines
starting with `#` are ignored; so is anything before the first instruction that is prose
(a role template's text), as long as it does not start with an instruction word. FILE must
stay inside the working directory. It prints what it did, writes a summary to
$SPAWNER_RESULT_FILE when set, and exits 2 on an instruction it cannot carry out.
Standard library only; it needs no AI tool.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

VERBS = ("create", "append", "replace", "insert", "delete", "sleep")
TEXT = r"(?P<text>'[^']*'|\"[^\"]*\"|.+?)"
FILE = r"(?P<file>\S+)"
LINE = r"line (?P<n>\d+)"
PATTERNS = {
    "create": re.compile(rf"^create {FILE} with {TEXT}$"),
    "append": re.compile(rf"^append {TEXT} to {FILE}$"),
    "replace": re.compile(rf"^replace {LINE} of {FILE} with {TEXT}$"),
    "insert": re.compile(rf"^insert {TEXT} before {LINE} of {FILE}$"),
    "delete": re.compile(rf"^delete {LINE} of {FILE}$"),
    "sleep": re.compile(r"^sleep (?P<seconds>\d+(\.\d+)?)$"),
}
MAX_SLEEP = 60


class Refused(Exception):
    """An instruction this agent cannot carry out."""


def nouns(n: int, word: str) -> str:
    """ "1 finding", "3 findings": the noun in the number it takes."""
    return f"{n} {word if n == 1 else word + 's'}"


def unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    return text.replace("\\n", "\n")


def target(root: Path, name: str) -> Path:
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()) or path == root.resolve() or ".git" in Path(name).parts:
        raise Refused(f"{name!r} is outside the working directory")
    return path


def read_lines(path: Path, name: str) -> list[str]:
    if not path.is_file():
        raise Refused(f"{name} does not exist")
    return path.read_text().splitlines()


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def line_index(n: str, lines: list[str], name: str, *, end_ok: bool = False) -> int:
    i = int(n) - 1
    if i < 0 or i > len(lines) or (i == len(lines) and not end_ok):
        raise Refused(f"{name} has {nouns(len(lines), 'line')}: there is no line {n}")
    return i


def apply(root: Path, instruction: str) -> str:
    """Carry out one instruction; returns what was done, for the log and the summary."""
    verb = instruction.split(maxsplit=1)[0].lower()
    match = PATTERNS[verb].match(instruction)
    if not match:
        raise Refused(f"cannot read the instruction {instruction!r} (see the forms in the agent's help)")
    if verb == "sleep":
        seconds = min(float(match["seconds"]), MAX_SLEEP)
        time.sleep(seconds)
        return f"thought for {seconds:g} s"
    name = match["file"]
    path = target(root, name)
    text = unquote(match["text"]) if "text" in match.groupdict() and match["text"] is not None else ""
    if verb == "create":
        write_lines(path, text.split("\n"))
        return f"created {name}"
    lines = read_lines(path, name)
    if verb == "append":
        lines += text.split("\n")
        done = f"appended to {name}"
    elif verb == "replace":
        i = line_index(match["n"], lines, name)
        lines[i : i + 1] = text.split("\n")
        done = f"replaced line {match['n']} of {name}"
    elif verb == "insert":
        i = line_index(match["n"], lines, name, end_ok=True)
        lines[i:i] = text.split("\n")
        done = f"inserted before line {match['n']} of {name}"
    else:
        del lines[line_index(match["n"], lines, name)]
        done = f"deleted line {match['n']} of {name}"
    write_lines(path, lines)
    return done


def instructions(prompt: str) -> list[str]:
    found = []
    for raw in prompt.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.split(maxsplit=1)[0].lower() in VERBS:
            found.append(line)
    return found


def main(argv: list[str]) -> int:
    prompt = " ".join(argv) if argv else sys.stdin.read()
    root = Path.cwd()
    steps = instructions(prompt)
    done: list[str] = []
    verdict, code = "pass", 0
    try:
        if not steps:
            raise Refused("the prompt holds no instruction (create, append, replace, insert, delete, sleep)")
        for step in steps:
            done.append(apply(root, step))
            print(done[-1], flush=True)
    except Refused as exc:
        print(f"coding agent: {exc}", file=sys.stderr)
        done.append(f"stopped: {exc}")
        verdict, code = "fail", 2
    if result_file := os.environ.get("SPAWNER_RESULT_FILE"):
        summary = "; ".join(done)
        Path(result_file).write_text(json.dumps({"summary": summary, "verdict": verdict, "findings": []}))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
