"""The log viewer's pure parts: the line index, paging, reading lines, stderr, sections, search."""

from __future__ import annotations

import pytest

from spawner.core import logview
from spawner.core.logview import BadQuery, LineIndex


def reader(data: bytes):
    calls = []

    def read(offset: int, size: int) -> bytes:
        calls.append((offset, size))
        return data[offset : offset + size]

    read.calls = calls
    return read


def build(data: bytes, *, stride: int = logview.STRIDE, chunk: int = 4096) -> LineIndex:
    index = LineIndex(stride=stride)
    for piece in logview.line_chunks(reader(data), len(data), chunk=chunk):
        index.feed(piece)
    index.file_size = len(data)
    return index


def numbered(n: int) -> bytes:
    return b"".join(b"%d\n" % i for i in range(1, n + 1))


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 100_000])
def test_index_marks_every_stride_lines_whatever_the_chunking(chunk):
    data = numbered(2500)
    index = build(data, stride=1000, chunk=chunk)
    assert index.lines == 2500
    assert index.marks == [0, data.index(b"\n1001\n") + 1, data.index(b"\n2001\n") + 1]


def test_line_count_with_and_without_a_final_newline():
    assert build(b"").lines == 0
    assert build(b"a").lines == 1
    assert build(b"a\n").lines == 1
    assert build(b"a\nb").lines == 2
    assert build(b"\n\n").lines == 2


def test_a_growing_log_extends_the_index():
    index = LineIndex(stride=10)
    index.feed(numbered(15))
    index.file_size = index.size + 3  # "16" being written, no newline yet
    assert index.lines == 16
    index.feed(b"".join(b"%d\n" % i for i in range(16, 31)))
    index.file_size = index.size
    assert index.lines == 30
    assert index.marks[:3] == [0, 21, 51]


def test_read_lines_gives_whole_numbered_lines_with_offsets():
    data = numbered(2500)
    index = build(data, stride=1000)
    read = reader(data)
    lines = logview.read_lines(read, index, 1998, 2003)
    assert [(line.number, line.text) for line in lines] == [(n, str(n)) for n in range(1998, 2004)]
    assert data[lines[0].start : lines[0].end] == b"1998\n"
    # It starts from the nearest remembered line, not from the beginning of the file.
    assert read.calls[0][0] == index.marks[1]


def test_read_lines_last_line_without_newline_and_past_the_end():
    data = b"one\ntwo\nthree"
    index = build(data)
    assert [line.text for line in logview.read_lines(reader(data), index, 2, 10)] == ["two", "three"]
    assert logview.read_lines(reader(data), index, 4, 10) == []
    assert logview.read_lines(reader(b""), build(b""), 1, 10) == []


def test_a_very_long_line_is_cut_and_the_next_still_numbered():
    data = b"short\n" + b"x" * 50_000 + b"\nafter\n"
    index = build(data)
    lines = logview.read_lines(reader(data), index, 1, 3)
    assert [line.number for line in lines] == [1, 2, 3]
    assert lines[1].cut and len(lines[1].text) == logview.MAX_LINE_BYTES
    assert lines[2].text == "after" and not lines[2].cut


def test_read_lines_bounded_by_bytes():
    data = (b"y" * 10_000 + b"\n") * 100
    lines = logview.read_lines(reader(data), build(data), 1, 100, max_bytes=50_000)
    assert 1 <= len(lines) < 10


def test_broken_utf8_and_nul_bytes_show_as_replacement():
    data = b"ok \xff\xfe here\x00\n"
    (line,) = logview.read_lines(reader(data), build(data), 1, 1)
    assert line.text == "ok \ufffd\ufffd here\ufffd"


def test_paging_maths():
    assert logview.page_count(0) == 1
    assert logview.page_count(100_000, 1000) == 100
    assert logview.page_count(100_001, 1000) == 101
    assert logview.page_of_line(1000, 1000) == 1
    assert logview.page_of_line(1001, 1000) == 2
    assert logview.page_span(3, 2500, 1000) == (2001, 2500)
    assert logview.page_span(10**9, 2500, 1000) == (2001, 2500)  # clamped to the last page
    assert logview.page_span(1, 0, 1000) == (1, 0)
    assert logview.tail_span(100_000, 1000) == (99_001, 100_000)
    assert logview.tail_span(5, 1000) == (1, 5)


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "1e3", " ", "١٢", "9" * 40, "0x10"])
def test_bad_page_numbers_are_refused_naming_the_field(value):
    if value.strip() == "":
        assert logview.parse_positive(value, "page") is None
        return
    with pytest.raises(BadQuery, match="^page: "):
        logview.parse_positive(value, "page")


def test_page_numbers_parse_and_clamp():
    assert logview.parse_positive(None, "page") is None
    assert logview.parse_positive("12", "page") == 12
    assert logview.parse_positive("999999999999", "line", limit=10**9) == 10**9


def test_stderr_ranges_parse_merge_and_mark_lines():
    ranges = logview.parse_ranges("10 20\n0 5\n20 25\nbad\n7 7\n")
    assert ranges == [(0, 5), (10, 25)]
    data = b"out1\nerr1\nout2\nerr2\n"
    lines = logview.read_lines(reader(data), build(data), 1, 4)
    logview.mark_stderr(lines, logview.parse_ranges("5 10\n15 20\n"))
    assert [line.stderr for line in lines] == [False, True, False, True]


def test_sections_found_with_their_exit_codes():
    data = (
        "── spawner setup: make deps ──\nfetching\n── spawner setup: exit 0 ──\n"
        "agent says hi\nno newline── spawner gate: pytest -q ──\n1 failed\n── spawner gate: exit 1 ──\n"
    ).encode()
    index = build(data, chunk=16)
    setup, gate = index.sections
    assert (setup.step, setup.command, setup.start, setup.end, setup.exit_code) == ("setup", "make deps", 1, 3, 0)
    assert (gate.step, gate.start, gate.end, gate.exit_code) == ("gate", 5, 7, 1)
    # The gate's start marker followed output without a newline: it still opens the section.
    assert gate.command == "pytest -q"


def test_a_stopped_section_and_one_still_running():
    data = "── spawner setup: sleep 100 ──\n...\n── spawner setup: stopped ──\n── spawner gate: x ──\nrun\n".encode()
    setup, gate = build(data).sections
    assert setup.end == 3 and setup.exit_code is None
    assert gate.end is None
    assert logview.sections_on_page([setup, gate], 4, 10) == [gate]


def search(data: bytes, query: str, **kw):
    return logview.search(logview.line_chunks(reader(data), len(data), chunk=kw.pop("chunk", 4096)), query, **kw)


def test_search_finds_lines_with_their_numbers_case_insensitive():
    data = numbered(5000) + b"Needle in the HAY\n" + numbered(10)
    result = search(data, "needle in the hay", chunk=100)
    assert [(h.number, h.text) for h in result.hits] == [(5001, "Needle in the HAY")]
    assert result.lines_searched == 5011 and not result.more and result.stopped_at is None


def test_search_is_plain_text_not_a_pattern():
    data = b"a.b\naxb\n(a+)+$\n"
    assert [h.number for h in search(data, "a.b").hits] == [1]
    assert [h.number for h in search(data, "(a+)+$").hits] == [3]


def test_search_ignores_colours_and_handles_unicode_and_broken_bytes():
    data = b"\x1b[31mERROR\x1b[0m: disk full\n" + "Straße ok\n".encode() + b"\xff\xfe bad bytes\n"
    assert [h.number for h in search(data, "error: disk").hits] == [1]
    assert [h.number for h in search(data, "STRASSE").hits] == [2]
    assert [h.number for h in search(data, "bad bytes").hits] == [3]


def test_search_bounds_results_and_time():
    data = b"x\n" * 1000
    many = search(data, "x", max_results=10)
    assert len(many.hits) == 10 and many.more
    ticks = iter(range(1000))
    slow = search(data, "nothing", chunk=100, seconds=2, clock=lambda: next(ticks))
    assert slow.stopped_at is not None and slow.stopped_at < 1000 and slow.hits == []


def test_query_cleaning():
    assert logview.clean_query("hi \x00") == "hi "  # a space typed is looked for: "line 1 " is not "line 10"
    assert logview.clean_query("   ") == ""
    assert logview.clean_query(None) == ""
    with pytest.raises(BadQuery, match="^q: at most"):
        logview.clean_query("x" * 10_000)
    assert search(b"a\n", "").hits == []


def test_line_chunks_end_at_newlines():
    data = numbered(1000)
    pieces = list(logview.line_chunks(reader(data), len(data), chunk=50))
    assert b"".join(pieces) == data
    assert all(p.endswith(b"\n") for p in pieces)
    giant = b"z" * 1000
    assert b"".join(logview.line_chunks(reader(giant), len(giant), chunk=10)) == giant


def test_look_alike_markers_are_bounded():
    data = "── spawner setup: x ──\n".encode() * 10_000
    assert len(build(data).sections) == logview.MAX_SECTIONS


class _Tick:
    def __call__(self) -> bool:
        return True

    def started(self, pgid: int) -> None:
        pass


def test_sections_as_the_workspace_really_writes_them_and_stderr_as_the_runner_does(tmp_path):
    """The setup and gate markers come from the workspace's own run_step; the agent between them
    runs through the real command runner, its stderr relayed and noted beside the log."""
    from spawner.engine import workspaces
    from spawner.runners.base import Invocation
    from spawner.runners.command import CommandRunner

    log = tmp_path / "task.1.log"
    assert workspaces.run_step("setup", "echo installing; echo done", tmp_path, log, timeout=30, tick=_Tick())[0] == 0
    script = 'echo "to stdout"; sleep 0.1; echo "to stderr" >&2; sleep 0.1; printf "no newline at the end"'
    invocation = Invocation(
        argv_template=("sh", "-c", script),
        prompt="",
        prompt_via="argv",
        key="task",
        cwd=tmp_path,
        log_path=log,
        result_path=tmp_path / "task.1.result.json",
        prompt_path=tmp_path / "task.1.prompt.txt",
        env={"PATH": "/usr/bin:/bin"},
    )
    assert CommandRunner().start(invocation).wait(30) == 0
    assert workspaces.run_step("gate", "echo checking; exit 3", tmp_path, log, timeout=30, tick=_Tick())[0] == 3
    data = log.read_bytes()
    index = build(data)
    setup, gate = index.sections
    assert (setup.step, setup.command, setup.exit_code) == ("setup", "echo installing; echo done", 0)
    assert (gate.step, gate.exit_code) == ("gate", 3)
    lines = logview.read_lines(reader(data), index, 1, index.lines)
    texts = [line.text for line in lines]
    assert texts[setup.start - 1].startswith("── spawner setup:") and "exit 0" in texts[setup.end - 1]
    # The gate's marker follows output that had no newline: it opens the section on that line.
    assert texts[gate.start - 1].startswith("no newline at the end── spawner gate:")
    logview.mark_stderr(lines, logview.parse_ranges(logview.stderr_path(log).read_text()))
    assert [line.text for line in lines if line.stderr] == ["to stderr"]
