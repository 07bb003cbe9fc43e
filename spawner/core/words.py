"""Counted nouns for messages people read: "1 run", "3 runs", in the number they take."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """`n` and the noun in the number it takes: plural(1, "run") -> "1 run", plural(2, "run") -> "2 runs"."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
