"""A run's changes for people: the files it changed and its unified diff, highlighted on the server.

The diff is the file the engine wrote beside the attempt's log (`<key>.<n>.diff`), masked like
the log. Only its first SHOW_BYTES / SHOW_LINES are parsed and shown (a huge diff stays fast);
the whole file is a streamed download. Everything shown is escaped here: a path or a line with
HTML in it is text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import PurePosixPath

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from pygments.lexers import TextLexer, get_lexer_for_filename
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

from spawner import selectors
from spawner.models import AgentRun, RunAttempt, Workspace

SHOW_BYTES = 256 * 1024
SHOW_LINES = 3000
VIEWS = ("unified", "split")
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")
_ESCAPES = {"a": "\a", "b": "\b", "t": "\t", "n": "\n", "v": "\v", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


def short(commit: str | None) -> str:
    return (commit or "")[:10]


# --- parsing --------------------------------------------------------------------------------


@dataclass
class Line:
    kind: str  # add, del, ctx, hunk, note
    text: str
    old: int | None = None
    new: int | None = None
    html: str = ""  # the text, escaped and highlighted


@dataclass
class FileDiff:
    path: str
    index: int
    meta: list[str] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    binary: bool = False
    added: int | None = None
    removed: int | None = None
    outside_scope: bool = False

    @property
    def status(self) -> str:
        for m in self.meta:
            if m.startswith("new file"):
                return "added"
            if m.startswith("deleted file"):
                return "deleted"
        return "changed"


def _unquote(text: str) -> str:
    """A path git wrote in C quotes ("a/\\303\\251.txt"), as text."""
    if not (len(text) >= 2 and text[0] == '"' and text[-1] == '"'):
        return text
    out, i, body = bytearray(), 0, text[1:-1]
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in "01234567" and re.match(r"[0-7]{3}", body[i + 1 : i + 4]):
                out.append(int(body[i + 1 : i + 4], 8))
                i += 4
                continue
            out += _ESCAPES.get(nxt, nxt).encode()
            i += 2
            continue
        out += ch.encode()
        i += 1
    return out.decode("utf-8", errors="replace")


def header_path(rest: str) -> str:
    """The path in `diff --git a/P b/P` (renames are off, so both sides name the same file)."""
    if rest.startswith('"'):
        end = re.match(r'"(?:[^"\\]|\\.)*"', rest)
        first = end.group(0) if end else rest
        return _unquote(first)[2:]
    if rest.startswith("a/") and len(rest) >= 5:
        half = (len(rest) - 5) // 2
        if rest[2 + half : 5 + half] == " b/":
            return rest[2 : 2 + half]
    return rest.split(" b/", 1)[0].removeprefix("a/")


@dataclass
class ParsedDiff:
    files: list[FileDiff]
    notes: list[str]  # lines outside any file (the engine's "[diff cut at N bytes]")
    complete: bool  # False: the shown part ends before the file does


def parse(text: str, *, max_lines: int = SHOW_LINES) -> ParsedDiff:
    files: list[FileDiff] = []
    notes: list[str] = []
    current: FileDiff | None = None
    old_left = new_left = 0
    old = new = 0
    shown = 0
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, raw in enumerate(lines):
        if shown >= max_lines:
            return ParsedDiff(files, notes, complete=number >= len(lines))
        line = raw.rstrip("\r")
        if old_left > 0 or new_left > 0:
            tag, body = line[:1], line[1:]
            if tag == "+":
                current.lines.append(Line("add", body, new=new))
                new, new_left = new + 1, new_left - 1
            elif tag == "-":
                current.lines.append(Line("del", body, old=old))
                old, old_left = old + 1, old_left - 1
            elif tag == "\\":
                current.lines.append(Line("note", line))
            else:
                current.lines.append(Line("ctx", body, old=old, new=new))
                old, new, old_left, new_left = old + 1, new + 1, old_left - 1, new_left - 1
            shown += 1
            continue
        if line.startswith("diff --git "):
            current = FileDiff(header_path(line[len("diff --git ") :]), index=len(files))
            files.append(current)
            continue
        if current is None:
            if line.strip():
                notes.append(line)
            continue
        hunk = _HUNK.match(line)
        if hunk:
            old, new = int(hunk.group(1)), int(hunk.group(3))
            old_left = int(hunk.group(2)) if hunk.group(2) is not None else 1
            new_left = int(hunk.group(4)) if hunk.group(4) is not None else 1
            current.lines.append(Line("hunk", line))
            shown += 1
        elif line.startswith("\\"):
            current.lines.append(Line("note", line))
        elif line.startswith("Binary files ") or line == "GIT binary patch":
            current.binary = True
        elif line.startswith(("--- ", "+++ ", "index ")):
            continue
        elif line.startswith("["):
            notes.append(line)  # the engine's own note, after the last file
        else:
            current.meta.append(line)
    return ParsedDiff(files, notes, complete=True)


# --- highlighting ---------------------------------------------------------------------------


def _css(ttype) -> str:
    while ttype not in STANDARD_TYPES:
        ttype = ttype.parent
    return STANDARD_TYPES[ttype]


def _lexer(path: str):
    try:
        return get_lexer_for_filename(PurePosixPath(path).name or path, stripnl=False, ensurenl=False)
    except (ClassNotFound, ValueError):
        return TextLexer(stripnl=False, ensurenl=False)


def highlight_lines(path: str, texts: list[str]) -> list[str]:
    """Each line, escaped, its tokens in spans (classes as Pygments names them). Lexed together so
    that strings and comments over several lines colour right; plain escaped text if that fails."""
    if not texts:
        return []
    joined = "\n".join(t.replace("\r", "") for t in texts)
    try:
        out: list[list[tuple[str, str]]] = [[]]
        for ttype, value in _lexer(path).get_tokens(joined):
            css = _css(ttype)
            for i, piece in enumerate(value.split("\n")):
                if i:
                    out.append([])
                if not piece:
                    continue
                line = out[-1]
                if line and line[-1][0] == css:
                    line[-1] = (css, line[-1][1] + piece)  # one span for a run of one kind
                else:
                    line.append((css, piece))
        if out and not out[-1] and len(out) == len(texts) + 1:
            out.pop()
        if len(out) == len(texts):
            return [
                "".join(f'<span class="{css}">{escape(text)}</span>' if css else escape(text) for css, text in parts)
                for parts in out
            ]
    except Exception:  # a lexer's bug must not cost the page: show the text plainly
        pass
    return [escape(t) for t in texts]


def highlight(files: list[FileDiff]) -> None:
    for f in files:
        # One lexing per hunk: hunks are not contiguous in the file.
        blocks: list[list[Line]] = []
        for line in f.lines:
            if line.kind in ("add", "del", "ctx") and blocks:
                blocks[-1].append(line)
            else:
                line.html = escape(line.text)
                if line.kind == "hunk":
                    blocks.append([])
        for block in blocks:
            for line, html in zip(block, highlight_lines(f.path, [x.text for x in block]), strict=True):
                line.html = html


# --- rendering (in Python: thousands of rows through the template engine would be slow) ---------

_SIGN = {"add": "+", "del": "-", "ctx": " ", "note": "", "hunk": ""}


def _num(n: int | None) -> str:
    return "" if n is None else str(n)


def unified_rows(f: FileDiff) -> SafeString:
    rows = []
    for line in f.lines:
        if line.kind in ("hunk", "note"):
            cells = f'<td class="ln" colspan="2"></td><td class="code">{line.html}</td>'
            rows.append(f'<tr class="{line.kind}">{cells}</tr>')
        else:
            rows.append(
                f'<tr class="{line.kind}"><td class="ln">{_num(line.old)}</td><td class="ln">{_num(line.new)}</td>'
                f'<td class="code" data-sign="{_SIGN[line.kind]}">{line.html}</td></tr>'
            )
    return mark_safe("".join(rows))  # every piece was escaped above


def _side(line: Line | None, which: str) -> str:
    if line is None:
        return '<td class="ln empty"></td><td class="code empty"></td>'
    number = line.old if which == "old" else line.new
    return f'<td class="ln {line.kind}">{_num(number)}</td><td class="code {line.kind}">{line.html}</td>'


def split_rows(f: FileDiff) -> SafeString:
    """Old on the left, new on the right: a run of removed lines faces the added lines after it."""
    rows: list[str] = []
    dels: list[Line] = []
    adds: list[Line] = []

    def flush():
        for left, right in zip_longest(dels, adds):
            rows.append(f"<tr>{_side(left, 'old')}{_side(right, 'new')}</tr>")
        dels.clear()
        adds.clear()

    for line in f.lines:
        if line.kind == "del" and not adds:
            dels.append(line)
        elif line.kind == "del":
            flush()
            dels.append(line)
        elif line.kind == "add":
            adds.append(line)
        else:
            flush()
            if line.kind == "ctx":
                rows.append(f"<tr>{_side(line, 'old')}{_side(line, 'new')}</tr>")
            else:
                cells = f'<td class="ln"></td><td class="code" colspan="3">{line.html}</td>'
                rows.append(f'<tr class="{line.kind}">{cells}</tr>')
    flush()
    return mark_safe("".join(rows))  # every piece was escaped above


# --- what the run page shows ----------------------------------------------------------------


def read_diff(attempt: RunAttempt, limit: int = SHOW_BYTES) -> tuple[str, int] | None:
    """(the first `limit` bytes of the attempt's diff, masked and decoded; the whole file's size)."""
    with selectors.log_opened(attempt, ".diff") as source:
        if source is None:
            return None
        size = source.size
        data = selectors.log_range(source, 0, min(size, limit), selectors.log_secrets(attempt))
    if size > limit and (cut := data.rfind(b"\n")) > 0:
        data = data[: cut + 1]  # whole lines only
    return data.decode("utf-8", errors="replace").replace("\x00", "\ufffd"), size


def diff_context(run: AgentRun, *, number: int | None = None, view: str = "unified") -> dict:
    """Everything the run page's changes section needs, for one attempt (default: the current one)."""
    workspace = selectors.workspace_of(run.batch_id)
    isolated = workspace is not None and workspace.isolation == Workspace.Isolation.WORKTREE
    context: dict = {
        "run": run,
        "workspace": workspace if isolated else None,
        "view": view if view in VIEWS else "unified",
        "views": VIEWS,
    }
    if not isolated:
        return context
    numbers = list(run.attempts.order_by("number").values_list("number", flat=True))
    if number not in numbers:
        number = run.attempt if run.attempt in numbers else (numbers[-1] if numbers else None)
    attempt = run.attempts.filter(number=number).first() if number else None
    changes = attempt.changes if attempt else None
    context.update(
        {
            # A chosen layout or an earlier attempt is not what live updates show: that section keeps
            # another id, so the live fragment (id "diff") leaves it alone until the reader goes back.
            "pinned": context["view"] != "unified" or (attempt is not None and attempt.number != run.attempt),
            "diff_attempt": attempt,
            "attempt_numbers": numbers,
            "changes": changes,
            "base_short": short(attempt.base_commit if attempt else ""),
            "head_short": short(attempt.head_commit if attempt else ""),
            "gate": selectors.attempt_gate(attempt) if attempt else None,
            "scope_policy": workspace.scope_policy,
        }
    )
    if not changes:
        return context
    summary = {f["path"]: f for f in changes.get("files", [])}
    read = read_diff(attempt)
    parsed = parse(read[0]) if read else ParsedDiff([], [], complete=True)
    highlight(parsed.files)
    for f in parsed.files:
        known = summary.get(f.path)
        if known:
            f.added, f.removed, f.outside_scope = known["added"], known["removed"], known["outside_scope"]
            f.binary = f.binary or known["added"] is None
    render = split_rows if context["view"] == "split" else unified_rows
    shown = {f.path: f.index for f in parsed.files}
    context.update(
        {
            "files": [{**f, "anchor": shown.get(f["path"])} for f in changes.get("files", [])],
            "diff_files": [{"file": f, "rows": render(f)} for f in parsed.files],
            "diff_notes": parsed.notes,
            "diff_size": read[1] if read else None,
            "diff_capped": bool(read) and (read[1] > SHOW_BYTES or not parsed.complete),
        }
    )
    return context
