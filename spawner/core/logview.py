"""An attempt's log as numbered lines: a sparse line index, paging, search, stderr and sections.

Pure: the callers read the file (masked) and hand the bytes in. A log is append-only while
its attempt runs, so the index is built once and extended as the file grows. Line numbers
start at 1; a line is the bytes up to and including its newline (the last may have none).
"""

from __future__ import annotations

import re
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

STRIDE = 1000  # one remembered offset every STRIDE lines: 100 numbers for 100,000 lines
PAGE_LINES = 1000
MAX_LINE_BYTES = 4096  # longer lines are cut for display (the download keeps them whole)
KEEP_BYTES = MAX_LINE_BYTES + 1024  # kept of a long line: a secret across the cut is still masked whole
PAGE_MAX_BYTES = 2 * 1024 * 1024  # what one page may read at most, however long its lines
MAX_SECTIONS = 20  # a workspace writes two (setup, gate); an agent printing look-alikes gets no more
SEARCH_MAX_CHARS = 200
SEARCH_MAX_RESULTS = 200
SEARCH_SECONDS = 3.0
SEARCH_CHUNK_BYTES = 1024 * 1024

# The markers the workspace writes around setup and gate output.
SECTION_START = re.compile(r"── spawner (setup|gate): (?!exit -?\d+ ──$|stopped ──$)(.*) ──$")
SECTION_END = re.compile(r"── spawner (setup|gate): (?:exit (-?\d+)|stopped) ──$")
_MARK_BYTES = "── spawner ".encode()
# ANSI escapes are not part of what a person searches for.
_ESCAPE = re.compile(r"\x1b\[[0-9;:?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?")


class BadQuery(ValueError):
    """A request's paging or search field is not acceptable; the message names the field."""


@dataclass
class Section:
    step: str  # setup or gate
    command: str
    start: int  # the marker line
    end: int | None = None  # the exit line; None while it runs (or when the log was cut)
    exit_code: int | None = None


@dataclass
class LineIndex:
    """Where every STRIDE-th line starts, how many lines there are, and the marked sections.

    Feed it the file's bytes in order, in pieces that end at a newline (see `line_chunks`);
    `size` is how much it has seen, `file_size` how big the file is now (a last line without its
    newline yet is counted but not indexed, so that a marker is never split between two feeds).
    """

    stride: int = STRIDE
    marks: list[int] = field(default_factory=lambda: [0])  # marks[k]: offset of line k*stride+1
    newlines: int = 0
    size: int = 0
    file_size: int = 0
    sections: list[Section] = field(default_factory=list)
    _last_newline_end: int = 0

    @property
    def lines(self) -> int:
        return self.newlines + (1 if max(self.file_size, self.size) > self._last_newline_end else 0)

    def feed(self, data: bytes) -> None:
        if not data:
            return
        pos = 0
        first_line = self.newlines + 1
        left = data.count(b"\n")  # newlines after pos
        while True:
            wanted = len(self.marks) * self.stride - self.newlines  # newlines until the next mark
            if left < wanted:
                self.newlines += left
                break
            pos = _after_newlines(data, pos, wanted)
            left -= wanted
            self.newlines += wanted
            self.marks.append(self.size + pos)
        if _MARK_BYTES in data:
            for offset, raw in enumerate(data.split(b"\n")):
                self._section_line(raw, first_line + offset)
        if (last := data.rfind(b"\n")) != -1:
            self._last_newline_end = self.size + last + 1
        self.size += len(data)
        self.file_size = max(self.file_size, self.size)

    def _section_line(self, raw: bytes, number: int) -> None:
        if _MARK_BYTES not in raw:
            return
        text = raw.decode("utf-8", "replace").rstrip("\r")
        if (end := SECTION_END.search(text)) and self.sections and self.sections[-1].end is None:
            open_section = self.sections[-1]
            if open_section.step == end.group(1):
                open_section.end = number
                open_section.exit_code = int(end.group(2)) if end.group(2) else None
                return
        if (start := SECTION_START.search(text)) and len(self.sections) < MAX_SECTIONS:
            self.sections.append(Section(step=start.group(1), command=start.group(2), start=number))

    def seek(self, line: int) -> tuple[int, int]:
        """(offset of a remembered line at or before `line`, that line's number)."""
        k = min((max(line, 1) - 1) // self.stride, len(self.marks) - 1)
        return self.marks[k], k * self.stride + 1


def _after_newlines(data: bytes, pos: int, n: int) -> int:
    """The offset just after the n-th newline from `pos` (there are at least n): whole blocks are
    counted in C, and only the last few newlines are stepped over one by one."""
    block = 65536
    while n > 8:
        found = data.count(b"\n", pos, pos + block)
        if found < n:
            n -= found
            pos += block
        elif block > 64:
            block //= 4
        else:
            break
    for _ in range(n):
        pos = data.index(b"\n", pos) + 1
    return pos


# --- paging -------------------------------------------------------------------------------------


def parse_positive(value: str | None, name: str, *, limit: int = 10**9) -> int | None:
    """A page or line number from a query string: None when absent, BadQuery when not a number
    from 1 (a huge one is clamped by the caller to what exists)."""
    text = (value or "").strip()
    if not text:
        return None
    if not text.isdigit() or not text.isascii() or len(text) > 12:
        raise BadQuery(f"{name}: a whole number from 1 is needed, not {value[:40]!r}")
    number = int(text)
    if number < 1:
        raise BadQuery(f"{name}: a whole number from 1 is needed, not {value[:40]!r}")
    return min(number, limit)


def page_count(lines: int, per_page: int = PAGE_LINES) -> int:
    return max(1, -(-lines // per_page))


def page_of_line(line: int, per_page: int = PAGE_LINES) -> int:
    return (max(line, 1) - 1) // per_page + 1


def page_span(page: int, lines: int, per_page: int = PAGE_LINES) -> tuple[int, int]:
    """First and last line of a page (clamped to the pages there are); (1, 0) for an empty log."""
    page = min(max(page, 1), page_count(lines, per_page))
    first = (page - 1) * per_page + 1
    return first, min(lines, page * per_page)


def tail_span(lines: int, count: int = PAGE_LINES) -> tuple[int, int]:
    """The last whole lines of the log: the live tail starts at a line's start, never mid-line."""
    return max(1, lines - count + 1), lines


@dataclass
class Line:
    number: int
    start: int  # byte offset
    end: int  # byte offset after its newline
    text: str
    cut: bool = False
    stderr: bool = False


def read_lines(
    read: Callable[[int, int], bytes],
    index: LineIndex,
    first: int,
    last: int,
    *,
    max_bytes: int = PAGE_MAX_BYTES,
    mask: Callable[[bytes], bytes] | None = None,
) -> list[Line]:
    """Lines first..last, reading on from the index's nearest mark; each cut at MAX_LINE_BYTES,
    and no more than about `max_bytes` read past the mark. `read(offset, size)` gives the file's
    bytes as they are (offsets stay true); `mask` hides secrets in a line before it is cut."""
    if last < first or first > index.lines:
        return []
    offset, number = index.seek(first)
    limit = max(index.file_size, index.size)
    budget = max_bytes + (first - number) * MAX_LINE_BYTES
    out: list[Line] = []
    line_start, pending = offset, b""
    while offset < limit and number <= last and budget > 0:
        data = read(offset, min(SEARCH_CHUNK_BYTES, limit - offset, budget))
        if not data:
            break
        pos = 0
        while number <= last:
            nl = data.find(b"\n", pos)
            if nl == -1:
                break
            if number >= first:
                raw = (pending + data[pos : nl + 1])[:KEEP_BYTES]
                out.append(_line(number, line_start, offset + nl + 1, mask(raw) if mask else raw))
            number += 1
            line_start, pending, pos = offset + nl + 1, b"", nl + 1
        if number >= first and number <= last:
            pending = (pending + data[pos:])[:KEEP_BYTES]
        offset += len(data)
        budget -= len(data)
    if number <= last and number >= first and line_start < offset and offset >= limit:
        out.append(_line(number, line_start, offset, mask(pending) if mask else pending))
    return out


def _line(number: int, start: int, end: int, raw: bytes) -> Line:
    cut = end - start - (1 if raw.endswith(b"\n") else 0) > MAX_LINE_BYTES
    text = raw[:MAX_LINE_BYTES].decode("utf-8", "replace").rstrip("\n").rstrip("\r")
    return Line(number=number, start=start, end=end, text=text.replace("\x00", "\ufffd"), cut=cut)


# --- stderr -------------------------------------------------------------------------------------
# The command runner sends the agent's stderr through a small relay that appends it to the log and
# notes each piece's byte range ("start end" per line) in a sidecar file beside the log.

STDERR_INDEX_MAX_BYTES = 8 * 1024 * 1024


def stderr_path(log_path: Path) -> Path:
    """The sidecar beside `<key>.<n>.log`: `<key>.<n>.stderr`."""
    return log_path.with_name(log_path.name.removesuffix(".log") + ".stderr")


def parse_ranges(text: str) -> list[tuple[int, int]]:
    """The runner's stderr sidecar ("start end" per line, in writing order): sorted and merged."""
    found: list[tuple[int, int]] = []
    for row in text.splitlines():
        parts = row.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            start, end = int(parts[0]), int(parts[1])
            if end > start:
                found.append((start, end))
    found.sort()
    merged: list[tuple[int, int]] = []
    for start, end in found:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def mark_stderr(lines: Iterable[Line], ranges: list[tuple[int, int]]) -> None:
    """A line is stderr when most of its bytes (its newline aside) came through stderr."""
    if not ranges:
        return
    starts = [r[0] for r in ranges]
    for line in lines:
        end = line.end - 1 if line.end - line.start > 1 else line.end
        covered = 0
        k = max(0, bisect_right(starts, line.start) - 1)
        while k < len(ranges) and ranges[k][0] < end:
            covered += max(0, min(end, ranges[k][1]) - max(line.start, ranges[k][0]))
            k += 1
        line.stderr = covered * 2 > (end - line.start)


# --- search -------------------------------------------------------------------------------------


@dataclass
class Hit:
    number: int
    text: str


@dataclass
class SearchResult:
    query: str
    hits: list[Hit]
    more: bool = False  # more matches than are listed
    stopped_at: int | None = None  # the line where the time limit stopped it
    lines_searched: int = 0


def clean_query(value: str | None) -> str:
    """The text to look for: plain text (never a pattern), bounded, spaces kept as typed ("line 1 "
    finds "line 1 of", not "line 10"); only spaces is nothing to look for."""
    text = (value or "").replace("\x00", "").strip("\r\n")
    if not text.strip():
        return ""
    if len(text) > SEARCH_MAX_CHARS:
        raise BadQuery(f"q: at most {SEARCH_MAX_CHARS} characters can be searched for, not {len(text)}")
    return text


def line_chunks(
    read: Callable[[int, int], bytes], size: int, chunk: int = SEARCH_CHUNK_BYTES, *, start: int = 0
) -> Iterator[bytes]:
    """The file from `start` in pieces that end at a newline (one piece never grows past 4 chunks)."""
    offset = start
    carry = b""
    while offset < size:
        data = read(offset, min(chunk, size - offset))
        if not data:
            break
        offset += len(data)
        buf = carry + data
        cut = buf.rfind(b"\n") + 1
        if cut == 0 and len(buf) < 4 * chunk and offset < size:
            carry = buf
            continue
        if cut == 0:
            cut = len(buf)
        yield buf[:cut]
        carry = buf[cut:]
    if carry:
        yield carry


def search(
    chunks: Iterable[bytes],
    query: str,
    *,
    max_results: int = SEARCH_MAX_RESULTS,
    seconds: float = SEARCH_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> SearchResult:
    """Lines containing `query` (case-insensitive plain text, ANSI colours ignored), in order.

    Memory is one chunk; time is bounded by `seconds` (the result says where it stopped).
    """
    result = SearchResult(query=query, hits=[])
    if not query:
        return result
    needle = query.casefold()
    deadline = clock() + seconds
    line = 1
    for chunk in chunks:
        text = chunk.decode("utf-8", "replace")
        if "\x1b" in text:
            text = _ESCAPE.sub("", text)
        folded = text.casefold()
        if needle in folded:
            rows = text.split("\n")
            for offset, row in enumerate(rows):
                if needle in row.casefold():
                    if len(result.hits) >= max_results:
                        result.more = True
                        result.lines_searched = line + offset
                        return result
                    shown = row.rstrip("\r").replace("\x00", "\ufffd")
                    result.hits.append(Hit(number=line + offset, text=shown[:MAX_LINE_BYTES]))
        line += chunk.count(b"\n")
        result.lines_searched = line - 1
        if clock() > deadline:
            result.stopped_at = line
            return result
    return result


def sections_on_page(sections: list[Section], first: int, last: int) -> list[Section]:
    """The sections that overlap lines first..last."""
    return [s for s in sections if s.start <= last and (s.end is None or s.end >= first)]
