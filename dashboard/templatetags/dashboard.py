"""Small filters and tags for the pages: agent output, durations, ratios, the escalations badge."""

from __future__ import annotations

import json

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from dashboard.pages import ansi, rows
from spawner import permissions, selectors

register = template.Library()


@register.filter
def ansi_html(text: str | None):
    """Agent output, escaped, with ANSI colours as spans."""
    return ansi.to_html(text or "")


@register.filter
def last_lines(text: str | None):
    return ansi.last_lines(text or "")


@register.filter
def headline(text: str | None) -> str:
    """A reason's first paragraph: what the card says in bold."""
    return (text or "").split("\n\n", 1)[0]


@register.filter
def after_headline(text: str | None) -> str:
    """What a reason says after its first paragraph (a conflict's lines, say), shown folded."""
    parts = (text or "").split("\n\n", 1)
    return parts[1] if len(parts) == 2 else ""


@register.filter
def seconds(value: float | None) -> str:
    """A duration a person reads at a glance: 0.4 s, 12.3 s, 2 min 05 s, 1 h 02 min."""
    return rows.seconds(value)


@register.filter
def times(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


@register.filter
def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f} %"


@register.simple_tag
def open_escalations_count() -> int:
    """For the header badge on every page; the site websocket keeps it current."""
    return selectors.open_escalations_count()


@register.simple_tag(takes_context=True)
def may(context) -> str:
    """What the reader may do, for `<body data-may>`: live fragments are shared by every reader, so
    the page, not each fragment, hides the buttons its reader may not use (the server refuses anyway)."""
    return " ".join(permissions.granted(context.get("user")))


@register.filter
def tail_lines(text: str | None, count: int = 8) -> str:
    """The last few lines of some output, as lines (for a short log box)."""
    lines = (text or "")[-4000:].rstrip("\n").splitlines()
    return "\n".join(lines[-int(count) :])


@register.filter
def words(value: str | None) -> str:
    """An identifier as words: changes_requested -> changes requested."""
    return (value or "").replace("_", " ")


@register.filter
def pretty_json(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


@register.filter
def path_breaks(path: str | None):
    """A file path that may wrap after each slash instead of in the middle of a name."""
    return format_html_join(mark_safe("/<wbr>"), "{}", ((part,) for part in (path or "").split("/")))


@register.filter
def usd(value) -> str:
    if value is None:
        return "–"
    value = float(value)
    return f"${value:.2f}" if value == 0 or value >= 0.01 else f"${value:.4f}"


# --- cost (issue 10): tokens and cost, or "cost unknown" with the reason on hover -----------------


def short_count(n: int) -> str:
    """12345 -> 12.3k, 1234567 -> 1.23M."""
    if n >= 1_000_000:
        return f"{n / 1_000_000:.3g}M"
    if n >= 1000:
        return f"{n / 1000:.3g}k"
    return str(n)


NO_USAGE = mark_safe('<span class="muted" title="no usage reported (yet)">–</span>')


@register.simple_tag
def usage_cell(usage, cost_usd):
    """A run's or attempt's tokens and cost for a table cell; recorded when each attempt ends."""
    view = selectors.usage_view(usage, cost_usd)
    if view is None:
        return NO_USAGE
    detail = (
        f"input {view['input_tokens']} · output {view['output_tokens']} · cache read {view['cache_read_tokens']}"
        f" · cache write {view['cache_write_tokens']}"
        + (f" · {', '.join(view['models'])}" if view["models"] else "")
        + f" · from {view['source']}"
    )
    tokens = format_html('<span class="tokens" title="{}">{} tok</span>', detail, short_count(view["tokens"]))
    if view["cost_usd"] is not None:
        cost = format_html('<span class="cost">{}</span>', view["cost_label"])
    else:
        cost = format_html('<span class="cost unknown" title="{}">cost unknown</span>', view["cost_note"])
    return format_html("{}<br>{}", cost, tokens) if view["tokens"] else cost


# --- timings and states you can read ---------------------------------------------------------


@register.simple_tag
def clock(value, running=False):
    """A duration; while it grows (`running`) the browser ticks it every second (static/clock.js)."""
    return rows.clock(value, running)


@register.simple_tag
def run_row(run):
    """A run's row in the batch page's grid (dashboard/pages/rows.py: Python, for 1,000-run pages)."""
    return rows.run_row(run, usage_cell)


@register.simple_tag
def batch_badge(batch, open_escalations=0, big=False):
    """A batch's status as text, with a glyph (static/timings.css), never by colour alone; with open
    escalations it needs attention (a failed P0 run or a lost run waits for a person), whatever its
    outcome says."""
    label = batch.get_status_display()
    if batch.cancel_requested and batch.status == "running":
        label = f"{label} · cancelling"
    size = " big" if big else ""
    if open_escalations:
        title = (
            f"{open_escalations} open escalation{'s' if open_escalations != 1 else ''}: "
            "a person must decide (a failed P0 run, a lost run, a vote, a conflict, a budget)"
        )
        return format_html(
            '<span class="badge batch-state attention {}{}" title="{}">{} · needs attention</span>',
            batch.status,
            size,
            title,
            label,
        )
    return format_html('<span class="badge batch-state {}{}">{}</span>', batch.status, size, label)


@register.filter
def segment_title(segment) -> str:
    """A progress bar segment (name, count, width) as words: "3 succeeded"."""
    name, n, _ = segment
    return f"{n} {name.replace('_', ' ')}"
