"""Replace an agent's secret values by `***` in what Spawner stores and shows.

Works on text and on bytes (logs may hold invalid UTF-8). Overlapping secrets are
masked as one span, so no part of either shows. Values shorter than MIN_SECRET_LENGTH
are not masked: replacing every "1" or "ab" would destroy the output and hide nothing
worth hiding (such a value is no secret anyway).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

MIN_SECRET_LENGTH = 4
MASK = "***"
S = TypeVar("S", str, bytes)


def usable(values: Iterable[str]) -> list[str]:
    """The values worth masking, longest first, without duplicates."""
    return sorted({v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH}, key=len, reverse=True)


def as_bytes(values: Iterable[str]) -> list[bytes]:
    return sorted({v.encode() for v in usable(values)}, key=len, reverse=True)


def spans(data: S, secrets: Sequence[S]) -> list[tuple[int, int]]:
    """Merged [start, end) spans covered by any occurrence of any secret, overlaps included."""
    found = []
    for secret in secrets:
        at = data.find(secret)
        while at >= 0:
            found.append((at, at + len(secret)))
            at = data.find(secret, at + 1)
    return merge(found)


def merge(found: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(found):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def render(data: S, covered: list[tuple[int, int]], start: int = 0, end: int | None = None, *, skip_first=False) -> S:
    """data[start:end] with each covered span (clipped to the window) replaced by the mask.
    `skip_first`: a span at the very start continues one already masked in the previous piece."""
    end = len(data) if end is None else end
    mask = MASK if isinstance(data, str) else MASK.encode()
    pieces = []
    at = start
    for s, e in covered:
        s, e = max(s, start), min(e, end)
        if s >= e:
            continue
        pieces.append(data[at:s])
        if not (skip_first and s == start):
            pieces.append(mask)
        at = e
    pieces.append(data[at:end])
    return data[:0].join(pieces)


def mask(data: S, secrets: Sequence[S]) -> S:
    """`data` with every secret value replaced (secrets of the same type as data)."""
    if not secrets or not data:
        return data
    return render(data, spans(data, secrets), 0, len(data))


def mask_window(data: S, start: int, end: int | None, secrets: Sequence[S]) -> S:
    """data[start:end], masked as if it were cut from `data` after masking: a secret crossing the
    window's edge is masked too. Pass max(len(secret)) - 1 extra items on each side."""
    if not secrets:
        return data[start:end]
    return render(data, spans(data, secrets), start, end)


def mask_json(value: Any, secrets: Sequence[str]) -> Any:
    """A JSON value with every string (keys included) masked, recursively."""
    if not secrets:
        return value
    if isinstance(value, str):
        return mask(value, secrets)
    if isinstance(value, list):
        return [mask_json(v, secrets) for v in value]
    if isinstance(value, dict):
        return {mask(str(k), secrets): mask_json(v, secrets) for k, v in value.items()}
    return value


class StreamMasker:
    """Masks a byte stream chunk by chunk in bounded memory: a secret split across chunks is still
    masked. feed() each chunk and write what it returns; finish() returns the rest."""

    def __init__(self, secrets: Sequence[str]):
        self.secrets = as_bytes(secrets)
        # An occurrence not yet complete starts in the last len - 1 bytes: hold those back.
        self.hold = max((len(s) for s in self.secrets), default=1) - 1
        self.pending = b""
        self.forced = 0  # leading bytes of `pending` that belong to a secret already found
        self.continued = False  # the last output ended inside a mask that goes on

    def feed(self, chunk: bytes) -> bytes:
        if not self.secrets:
            return chunk
        data = self.pending + chunk
        return self._emit(data, max(0, len(data) - self.hold))

    def finish(self) -> bytes:
        data, self.pending = self.pending, b""
        return self._emit(data, len(data)) if self.secrets else data

    def _emit(self, data: bytes, cut: int) -> bytes:
        if cut == 0:
            self.pending = data
            return b""
        found = spans(data, self.secrets)
        if self.forced:
            found = merge([*found, (0, self.forced)])
        out = render(data, found, 0, cut, skip_first=self.continued)
        crossing = [e for s, e in found if s < cut < e]
        self.forced = crossing[0] - cut if crossing else 0
        self.continued = bool(crossing)
        self.pending = data[cut:]
        return out
