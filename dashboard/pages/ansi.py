"""Agent output for a web page: escaped, ANSI colours as spans, other control codes dropped."""

from __future__ import annotations

import re

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# CSI sequences (colours, cursor moves, erase), OSC (titles, links), and two-byte escapes.
_ESCAPE = re.compile(r"\x1b\[([0-9;:?<>=]*)[ -/]*([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_COLOURS = {30: "black", 31: "red", 32: "green", 33: "yellow", 34: "blue", 35: "magenta", 36: "cyan", 37: "white"}


def _overprint(text: str) -> str:
    """A carriage return without a newline redraws the line (progress bars): keep the last drawing."""
    if "\r" not in text:
        return text
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))


def plain(text: str) -> str:
    """Plain text: no escape sequences, no control characters, no overprinted lines."""
    return _CONTROL.sub("", _ESCAPE.sub("", _overprint(text)))


def _apply_sgr(params: str, state: dict) -> None:
    codes = [int(p) if p.isdigit() else 0 for p in re.split(r"[;:]", params)] if params else [0]
    i = 0
    while i < len(codes):
        code = codes[i]
        if code == 0:
            state.clear()
        elif code == 1:
            state["bold"] = True
        elif code == 22:
            state.pop("bold", None)
        elif code in _COLOURS:
            state["fg"] = _COLOURS[code]
        elif 90 <= code <= 97:
            state["fg"] = "bright-" + _COLOURS[code - 60]
        elif code == 39:
            state.pop("fg", None)
        elif code in (38, 48):  # 256-colour or RGB: skip the arguments
            i += 2 if i + 1 < len(codes) and codes[i + 1] == 5 else 4
        i += 1


def _classes(state: dict) -> str:
    names = []
    if "fg" in state:
        names.append(f"ansi-{state['fg']}")
    if state.get("bold"):
        names.append("ansi-bold")
    return " ".join(names)


def to_html(text: str) -> SafeString:
    """Escaped HTML for a <pre>: colour and bold become spans; everything else unsafe is dropped."""
    text = _overprint(text)
    out: list[str] = []
    state: dict = {}
    pos = 0
    for match in _ESCAPE.finditer(text):
        _emit(out, text[pos : match.start()], state)
        if match.group(2) == "m":
            _apply_sgr(match.group(1), state)
        pos = match.end()
    _emit(out, text[pos:], state)
    return mark_safe("".join(out))


def _emit(out: list[str], chunk: str, state: dict) -> None:
    chunk = _CONTROL.sub("", chunk)
    if not chunk:
        return
    classes = _classes(state)
    out.append(f'<span class="{classes}">{escape(chunk)}</span>' if classes else escape(chunk))


def last_lines(text: str, *, lines: int = 2, chars: int = 160) -> str:
    """The last non-empty lines of some output, plain, for a one-glance column."""
    kept = [line.strip() for line in plain(text[-4000:]).splitlines() if line.strip()][-lines:]
    joined = " ⏎ ".join(kept)
    return joined if len(joined) <= chars else "…" + joined[-chars:]
