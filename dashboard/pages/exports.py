"""The Markdown export of a result, safe to render: what agents wrote is text, not HTML or script.

Agents' summaries, titles, file names and the batch's name go into the report. Whoever renders it
(a wiki, a code host, a chat) must not run what an agent wrote: HTML is escaped (it shows as
text), and a link survives only if it goes to http, https, mailto or a relative address.
"""

from __future__ import annotations

import re
from typing import Any

from spawner import selectors

SAFE_SCHEMES = {"http", "https", "mailto"}
_SCHEME = re.compile(r"[a-z][a-z0-9+.\-]*:")
# Where a link's destination starts: `[text](dest` (inline link or image) or `[label]: dest`
# (reference definition, at the start of a line).
_DESTINATION = re.compile(r"\]\(|^(\s{0,3}\[[^\]]*)\]:", re.MULTILINE)
_INVISIBLE = re.compile(r"[\x00-\x20\x7f\\]")


def _destination(text: str, start: int) -> str:
    """The destination after `](` or `]:` at `start`: up to whitespace or the closing parenthesis."""
    rest = text[start:].lstrip()
    depth, end = 0, 0
    for end, ch in enumerate(rest):  # noqa: B007
        if ch.isspace() or (ch == ")" and depth == 0):
            break
        depth += {"(": 1, ")": -1}.get(ch, 0)
    else:
        end = len(rest)
    return rest[:end]


def safe_link(destination: str) -> bool:
    """http, https, mailto or relative; control characters and backslashes (escapes) do not hide a scheme."""
    plain = _INVISIBLE.sub("", destination).lower()
    scheme = _SCHEME.match(plain)
    return scheme is None or scheme.group()[:-1] in SAFE_SCHEMES


def safe_text(text: str) -> str:
    """Escape HTML, then break every link whose destination is not safe: its `]` is escaped, so the
    brackets and the address read as plain text."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out, last = [], 0
    for match in _DESTINATION.finditer(text):
        bracket = match.start() if match.group(1) is None else match.start() + len(match.group(1))
        backslashes = len(text[:bracket]) - len(text[:bracket].rstrip("\\"))
        if backslashes % 2 == 0 and not safe_link(_destination(text, match.end())):
            out.append(text[last:bracket] + "\\]")
            last = bracket + 1
    out.append(text[last:])
    return "".join(out)


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {_safe(k) if isinstance(k, str) else k: _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    return value


def result_markdown(data: dict, *, title: str) -> str:
    return selectors.result_markdown(_safe(data), title=safe_text(title))


def review_record(batch) -> dict:
    """The review beside the result: its state, the approvals it needs and has, each decision."""
    summary = selectors.review_summary(batch)
    return {
        "state": summary.state,
        "approvals_needed": summary.needed,
        "approvals_counted": summary.counted,
        "approved_by": summary.approved_by,
        "not_counted": summary.not_counted,
        "reviews": [
            {
                "author": r.author.get_username(),
                "decision": r.decision,
                "comment": r.comment,
                "at": r.created_at.isoformat(),
            }
            for r in batch.reviews.select_related("author").order_by("id")
        ],
    }


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def safe_markdown(text: str) -> str:
    """Markdown a person wrote (a review comment), made safe like every other value, except inside
    fenced code blocks: a renderer shows them as text, so they are kept as written (an escaped `<`
    there would show as `&lt;`). A fence is recognised only where CommonMark sees one (at most
    three spaces before it; a backtick fence's info string holds no backtick); an unclosed fence
    runs to the end of the quote that holds it, as code. Inline code spans stay escaped: whether a
    backtick opens one depends on too much around it to leave anything raw on that guess."""
    out, fence = [], ""
    for line in text.splitlines():
        opening = _FENCE.match(line)
        if fence:
            out.append(line)
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = ""
            continue
        if opening and not (opening.group(1)[0] == "`" and "`" in line[opening.end() :]):
            fence = opening.group(1)
        out.append(safe_text(line))
    return "\n".join(out)


def _quoted(text: str) -> str:
    """A comment (Markdown itself) as a block quote, made safe (`safe_markdown`)."""
    return "\n".join(f"> {line}" if line.strip() else ">" for line in safe_markdown(text).splitlines())


def review_markdown(record: dict) -> str:
    """The review section of the Markdown export."""
    state = record["state"].replace("_", " ")
    lines = [
        "",
        "## Review",
        "",
        f"State: **{state}** ({min(record['approvals_counted'], record['approvals_needed'])} of "
        f"{record['approvals_needed']} approval{'s' if record['approvals_needed'] != 1 else ''} needed)",
    ]
    if record["approved_by"]:
        lines.append(f"Approved by: {', '.join(safe_text(name) for name in record['approved_by'])}")
    if record["not_counted"]:
        lines.append(f"Not counted (the batch's owner): {', '.join(safe_text(n) for n in record['not_counted'])}")
    lines.append("")
    if not record["reviews"]:
        lines.append("No reviews yet.")
    for r in record["reviews"]:
        when = r["at"][:16].replace("T", " ")
        lines.append(f"- **{safe_text(r['author'])}** {r['decision'].replace('_', ' ')} ({when})")
        if r["comment"].strip():
            lines.append("")
            lines.extend(f"  {line}" for line in _quoted(r["comment"]).splitlines())
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
