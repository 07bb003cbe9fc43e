"""Agent output on a page: escaped always, colours as spans, other escape codes gone."""

from __future__ import annotations

from dashboard.pages import ansi


def test_it_escapes_html_in_output():
    assert ansi.to_html("<script>alert(1)</script> & done") == ("&lt;script&gt;alert(1)&lt;/script&gt; &amp; done")


def test_it_turns_colours_into_spans():
    html = ansi.to_html("\x1b[31mFAIL\x1b[0m ok \x1b[1;32mPASS\x1b[m")
    assert html == '<span class="ansi-red">FAIL</span> ok <span class="ansi-green ansi-bold">PASS</span>'


def test_it_escapes_inside_coloured_text():
    assert ansi.to_html("\x1b[33m<b>\x1b[0m") == '<span class="ansi-yellow">&lt;b&gt;</span>'


def test_it_drops_cursor_moves_titles_and_control_characters():
    text = "a\x1b[2K\x1b[1Gb\x1b]0;title\x07c\x00d\x08e"
    assert ansi.to_html(text) == "abcde"


def test_it_keeps_the_last_drawing_of_a_progress_bar():
    assert ansi.plain("10%\r50%\r100%\ndone\r\n") == "100%\ndone\n"


def test_it_survives_256_colour_and_rgb_codes():
    assert ansi.to_html("\x1b[38;5;196mred\x1b[0m \x1b[38;2;1;2;3mrgb") == "red rgb"


def test_last_lines_are_plain_and_short():
    text = "first\n\n\x1b[32msecond\x1b[0m\nthird\n"
    assert ansi.last_lines(text) == "second ⏎ third"
    assert ansi.last_lines("x" * 500).startswith("…")
