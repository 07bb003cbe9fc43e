"""The dependency graph on a page: `{% plan_graph page as graph %}` for the new-batch page's plan."""

from __future__ import annotations

from html import escape

from django import template
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe
from django.utils.timezone import get_current_timezone

from dashboard.pages import graph as graph_pages
from dashboard.templatetags.dashboard import seconds
from spawner import selectors

register = template.Library()


@register.simple_tag
def plan_graph(page):
    """The plan preview's graph (None when the page has no plan to show)."""
    batch_spec = getattr(page, "batch_spec", None)
    if batch_spec is None or not getattr(page, "plan", None):
        return None
    return graph_pages.plan_graph(batch_spec)


# The timeline's lanes: a big batch has a thousand, so they are joined here rather than looped
# over in the template (a tenth of the time). Every text is escaped.
_LANE = (
    '<div class="lane" data-after="{after}"><a class="lane-key" href="{url}" title="{key}: {words}">'
    '<span class="g" aria-label="{words}">{glyph}</span> {key}</a><div class="track">{bars}</div></div>'
)
_BAR = (
    '<span class="bar {status}" style="left: {left:.3f}%; width: {width:.3f}%" title="{title}">'
    '<span class="bl"><span class="g">{glyph}</span> {duration}</span></span>'
)


def _bar_title(key: str, bar, tz) -> str:
    parts = [f"{key} · attempt {bar.number}: {bar.status.replace('_', ' ')}"]
    if bar.started_at is not None:
        parts.append(f"started {bar.started_at.astimezone(tz):%H:%M:%S} (+{seconds(bar.start)})")
    parts.append(f"{'running for' if bar.ongoing else 'took'} {seconds(bar.seconds)}")
    if bar.exit_code is not None:
        parts.append(f"exit code {bar.exit_code}")
    return " · ".join(parts)


@register.simple_tag
def timeline_lanes(timeline):
    glyphs = selectors.state_glyphs()
    tz = get_current_timezone()
    out = []
    for lane in timeline.lanes:
        key = escape(lane.key)
        bars = "".join(
            _BAR.format(
                status=escape(bar.status),
                left=bar.left,
                width=bar.width,
                title=escape(_bar_title(lane.key, bar, tz)),
                glyph=glyphs.get(bar.status, "·"),
                duration=seconds(bar.seconds),
            )
            for bar in lane.bars
        )
        out.append(
            _LANE.format(
                after=" ".join(map(str, lane.after)),
                url=escape(lane.url),
                key=key,
                words=escape(lane.status.replace("_", " ")),
                glyph=glyphs.get(lane.status, "·"),
                bars=bars,
            )
        )
    return mark_safe("".join(out))  # noqa: S308 - every value above is escaped


@register.simple_tag
def timeline_legend():
    """The statuses a bar may have, each with its glyph and pattern."""
    glyphs = selectors.state_glyphs()
    shown = [
        ("succeeded", "succeeded"),
        ("running", "running"),
        ("failed", "failed"),
        ("timed_out", "timed out"),
        ("lost", "lost"),
        ("cancelled", "cancelled"),
        ("handed_back", "handed back"),
        ("rate_limited", "rate limited"),
    ]
    return format_html_join(
        " ",
        '<span class="tl-key"><span class="bar-key {}"><span class="g">{}</span></span> {}</span>',
        ((status, glyphs[status], words) for status, words in shown),
    )
