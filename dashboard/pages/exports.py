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
