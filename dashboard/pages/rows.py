"""A run's row in the batch page's grid, rendered in Python.

A 1,000-run batch page is a thousand of these rows; through the template engine each cost about
a tenth of a millisecond in variable lookups alone. The page and the live updates both render a
row here (the `run-row` partial calls it), so there is one row, written once.
"""

from __future__ import annotations

from html import escape as _escape

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from dashboard.pages import ansi


def escape(value) -> str:
    """HTML-escaped text (the standard library's: Django's lazy-aware escape costs more per call
    than the rest of a row)."""
    return _escape(str(value), quote=True)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def seconds(value: float | None) -> str:
    """A duration a person reads at a glance: 0.4 s, 12.3 s, 2 min 05 s, 1 h 02 min."""
    if value is None:
        return "–"
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(int(round(value)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def clock(value: float | None, running) -> SafeString:
    """A duration; while it grows (`running`) the browser ticks it every second (static/clock.js),
    from the figure the server last sent. `running`: True, or a status ("running")."""
    running = running is True or running == "running"
    if value is None:
        return mark_safe('<span class="clock">–</span>')
    if running:
        return mark_safe(f'<span class="clock" data-clock="{value:.3f}" data-running>{seconds(value)}</span>')
    return mark_safe(f'<span class="clock">{seconds(value)}</span>')


def _diff_cell(run) -> str:
    diff = run.diff
    if not diff:
        return '<span class="muted">–</span>'
    if diff["changed"]:
        files = _n(diff["changed"], "file")
        cell = format_html(
            '<a href="{}#diff" title="{} changed"><span class="plus">+{}</span> <span class="minus">−{}</span>'
            ' <span class="muted">· {}</span></a>',
            run.url,
            files,
            diff["added"],
            diff["removed"],
            files,
        )
    else:
        cell = '<span class="muted" title="The agent changed no file">no changes</span>'
    if diff["outside"]:
        cell += format_html(
            '<br><span class="tag scope" title="{}">{} outside its files</span>',
            ", ".join(diff["outside"]),
            len(diff["outside"]),
        )
    return cell


def _tail_cell(run) -> str:
    cell = ""
    if run.error:
        cell = f'<span class="error-text">{escape(run.error)}</span>' + ("<br>" if run.tail_end else "")
    return cell + f"<code>{escape(ansi.last_lines(run.tail_end or ''))}</code>"


def run_row(run, usage_cell) -> SafeString:
    """The <tr> of one run (as `queries.batch_runs` prepares it); `usage_cell(usage, cost)` draws its cost."""
    running = run.status == "running"
    role = f'<br><span class="muted">{escape(run.role)}</span>' if run.role else ""
    title = "Running time of its attempts" + (", the current one so far" if running else "")
    return mark_safe(
        f'<tr id="run-{run.id}" class="run-row" data-status="{escape(run.status)}" data-attempt="{run.attempt}">\n'
        f'  <td class="key"><a href="{escape(run.url)}">{escape(run.key)}</a></td>\n'
        f'  <td class="small wide-only">{escape(run.agent_type_name)}{role}</td>\n'
        f'  <td><span class="badge {escape(run.status)}">{escape(run.status_label)}</span></td>\n'
        f'  <td class="num">{run.attempt}</td>\n'
        f'  <td class="wide-only">P{run.priority}</td>\n'
        f'  <td class="num">{run.wave + 1}</td>\n'
        f'  <td class="num duration" title="{title}">{clock(run.elapsed, run.status)}</td>\n'
        f'  <td class="num usage-col">{usage_cell(run.usage, run.cost_usd)}</td>\n'
        f'  <td class="diff-col num">{_diff_cell(run)}</td>\n'
        f'  <td class="tail">{_tail_cell(run)}</td>\n'
        "</tr>"
    )
