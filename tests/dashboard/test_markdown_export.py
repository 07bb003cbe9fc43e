"""The Markdown export renders what agents wrote as text: HTML escaped, only safe links kept."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from dashboard.pages.exports import _quoted, safe_link, safe_text
from spawner.models import Aggregation, Batch
from tests.dashboard.conftest import FANIN_SPEC, end_with_results

render = MarkdownIt("commonmark").enable("table").render

HOSTILE = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "[click](javascript:alert(1))",
    "[click]( JavaScript:alert(1) )",
    "[click](java\tscript:alert(1))",
    "[click](javascript\\:alert(1))",
    "[click](data:text/html;base64,PHNjcmlwdD4=)",
    "![img](vbscript:msgbox)",
    "[ref]\n\n[ref]: javascript:alert(1)",
    "<javascript:alert(1)>",
    "[a [nested]](javascript:alert(1))",
    "\\\\[x](javascript:alert(1))",
    "[x](&#106;avascript:alert(1))",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_renders_without_html_or_unsafe_links(text):
    html = render(safe_text(text))
    assert "<script" not in html and "<img" not in html, html
    for href in re.findall(r'(?:href|src)="([^"]*)"', html):
        assert safe_link(href), html


@pytest.mark.parametrize(
    ("text", "href"),
    [
        ("[docs](https://example.org/a?b=1&c=2)", "https://example.org/a?b=1&amp;c=2"),
        ("[plain](http://example.org)", "http://example.org"),
        ("[mail](mailto:team@example.org)", "mailto:team@example.org"),
        ("[file](spawner/runners/shell.py)", "spawner/runners/shell.py"),
        ("[up](../README.md#layout)", "../README.md#layout"),
    ],
)
def test_safe_links_survive(text, href):
    assert f'href="{href}"' in render(safe_text(text))


def _comment(text: str) -> str:
    """A review comment as the export renders it: a block quote in a list item."""
    return render("- **ann** approved\n\n" + "\n".join(f"  {line}" for line in _quoted(text).splitlines()))


def test_a_comments_code_block_is_kept_as_written():
    html = _comment("see:\n```html\n<script>alert(1)</script> & co\n```\nafter <b>x</b>")
    assert '<code class="language-html">&lt;script&gt;alert(1)&lt;/script&gt; &amp; co' in html  # not &amp;lt;
    assert "<script" not in html and "<b>" not in html and "after &lt;b&gt;x&lt;/b&gt;" in html


@pytest.mark.parametrize(
    "text",
    [
        "``` `x\n<script>alert(1)</script>",  # a backtick in the info string: no fence
        "    ```\n<script>alert(1)</script>",  # indented: code, but no fence
        "\t```\n<script>alert(1)</script>",
        "```\n<b>\n``\n<script>alert(1)</script>",  # a shorter close does not close: still code
        "~~~\nx\n~~~  \n<script>alert(1)</script>",  # closed: what follows is escaped again
        "```\nx\n~~~\n```\n<img src=x onerror=alert(1)>",
        "> ```\n<script>alert(1)</script>",
    ],
)
def test_a_comments_look_alike_fences_leave_nothing_to_render(text):
    html = _comment(text)
    assert "<script" not in html and "<img" not in html and "<b>" not in html, html


@given(
    st.lists(
        st.sampled_from(
            ["```", "~~~", "`", " ", "    ", "\t", ">", "\n", "<script>", "<img src=x>", "[a](javascript:x)", "x"]
        ),
        max_size=30,
    )
)
def test_no_comment_renders_html_or_an_unsafe_link(pieces):
    html = _comment("".join(pieces))
    assert "<script" not in html and "<img" not in html, html
    for href in re.findall(r'(?:href|src)="([^"]*)"', html):
        assert safe_link(href), html


def test_html_shows_as_text():
    assert render(safe_text("a <b>bold</b> & co")) == "<p>a &lt;b&gt;bold&lt;/b&gt; &amp; co</p>\n"


def test_the_export_of_a_hostile_result_is_safe(signed_in, member, make_batch):
    batch = make_batch(member, text=FANIN_SPEC)
    Batch.objects.filter(id=batch.id).update(name='<img src=x onerror="alert(1)">')
    hostile = {
        "summary": "see [the fix](javascript:alert(document.cookie)) <script>steal()</script>",
        "verdict": "<b>pass</b>",
        "findings": [
            {
                "severity": "high",
                "title": "[open me](javascript:alert(1))",
                "file": "<svg onload=alert(1)>",
                "line": 1,
            },
            {"severity": "low", "title": "[docs](https://example.org/docs)", "file": "a.py", "line": 2},
        ],
    }
    batch = end_with_results(batch, {"security": hostile})
    text = signed_in.get(f"/batches/{batch.id}/result.md").content.decode()
    html = render(text)
    assert "<script" not in html and "<svg" not in html and "<img" not in html and "<b>" not in html
    assert "javascript:" not in re.findall(r'href="([^"]*)"', html).__str__()
    assert 'href="https://example.org/docs"' in html, "a safe link survives"
    assert "&lt;script&gt;steal()&lt;/script&gt;" in text, "the text is still there, as text"
    # The JSON export is data, not a document: exactly what the agent wrote.
    agg = Aggregation.objects.get(batch=batch)
    data = signed_in.get(f"/batches/{batch.id}/result.json").json()
    assert data.pop("review")["state"] == "pending" and data == agg.data
