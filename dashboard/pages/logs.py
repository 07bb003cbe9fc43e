"""The run page's log viewer: an attempt's output as numbered lines, a page at a time, the live
tail of the current attempt, search over the whole log, stderr marked, setup and gate folded.

Lines link to themselves (`#L1234`, or `#a2-L1234` for an attempt that is not the current one);
the script (static/logview.js) opens the page holding a line that is not on screen.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_GET

from dashboard.pages import ansi
from spawner import selectors
from spawner.models import AgentRun, RunAttempt

PAGE_LINES = 1000
TAIL_LINES = 500


def anchor_prefix(attempt: RunAttempt, run: AgentRun) -> str:
    return "L" if attempt.number == run.attempt else f"a{attempt.number}-L"


def render_lines(lines, sections, prefix: str, highlight: int | None = None) -> SafeString:
    """The lines as HTML, built here rather than in a template loop (a page has a thousand);
    the lines of a setup or gate section go inside a folded <details>."""
    out: list[str] = []
    spans = [(s.start, s.end if s.end is not None else 10**12, s) for s in sections]
    open_until = None
    for line in lines:
        if open_until is not None and line.number > open_until:
            out.append("</div></details>")
            open_until = None
        if open_until is None:
            for start, end, section in spans:
                if start <= line.number <= end:
                    out.append(_section_head(section, line.number))
                    open_until = end
                    break
        classes, title = "l", ""
        if line.stderr:
            classes, title = "l err", ' title="stderr"'
        if line.number == highlight:
            classes += " hl"
        text = ansi.to_html(line.text) if "\x1b" in line.text or "\r" in line.text else escape(line.text)
        cut = '<span class="cut" title="A long line: the download has it whole">…</span>' if line.cut else ""
        out.append(
            f'<div class="{classes}" id="{prefix}{line.number}"{title}><a class="n" href="#{prefix}{line.number}">'
            f'{line.number}</a><span class="t">{text}{cut}</span></div>'
        )
    if open_until is not None:
        out.append("</div></details>")
    return mark_safe("".join(out))


def _section_head(section, first_shown: int) -> str:
    if section.end is None:
        state = "running"
    elif section.exit_code is None:
        state = "stopped"
    else:
        state = "passed" if section.exit_code == 0 else f"failed, exit {section.exit_code}"
    badge = "succeeded" if section.exit_code == 0 else ("running" if section.end is None else "failed")
    lines = f"lines {section.start}–{section.end}" if section.end else f"from line {section.start}"
    cont = " (continued)" if first_shown > section.start else ""
    return str(
        format_html(
            '<details class="log-section {}"><summary><strong>{}</strong> <code>{}</code> '
            '<span class="badge {}">{}</span> <span class="muted small">{}{}</span></summary><div class="body">',
            section.step,
            section.step.capitalize(),
            section.command,
            badge,
            state,
            lines,
            cont,
        )
    )


def section_context(run: AgentRun, attempt: RunAttempt | None, *, page: int | None = None, line: int | None = None):
    """What the output section shows: the live tail of the current attempt, or one page."""
    attempts = list(run.attempts.order_by("number").only("id", "number", "status", "log_path"))
    context = {
        "run": run,
        "log_attempt": attempt,
        "log_attempts": attempts,
        "log_current": attempt is not None and attempt.number == run.attempt,
        "log_highlight": line,
        "log_page_lines": PAGE_LINES,
    }
    index = selectors.log_index(attempt)
    if attempt is None or index is None:
        context.update(log_available=False, log_mode="tail", log_tail_text=_db_tail(run, attempt))
        return context
    total = index.lines
    pages = selectors.log_page_count(total, PAGE_LINES)
    if line is not None:
        page = selectors.log_page_of_line(min(line, max(total, 1)), PAGE_LINES)
    if page is None and not context["log_current"]:
        page = pages  # an earlier attempt opens at its end
    if page is None:
        mode = "tail"
        first, last = selectors.log_tail_span(total, TAIL_LINES)
    else:
        mode = "page"
        page = min(page, pages)
        first, last = selectors.log_page_span(page, total, PAGE_LINES)
    lines = selectors.log_lines(attempt, first, last) if total else []
    sections = [s for s in index.sections if s.start <= last and (s.end is None or s.end >= first)]
    context.update(
        log_available=True,
        log_mode=mode,
        log_size=index.file_size,
        log_total=total,
        log_first=first,
        log_last=lines[-1].number if lines else last,
        log_count=(lines[-1].number - first + 1) if lines else 0,
        log_page=page,
        log_pages=pages,
        log_prev=(page - 1 if page and page > 1 else None) if mode == "page" else (pages - 1 if first > 1 else None),
        log_next=page + 1 if mode == "page" and page < pages else None,
        log_html=render_lines(lines, sections, anchor_prefix(attempt, run), highlight=line),
        log_sections=len(index.sections),
        log_short=bool(lines) and lines[-1].number < last,
        log_has_stderr=any(line.stderr for line in lines),
        log_digits=max(4, len(str(last))),
    )
    return context


def _db_tail(run: AgentRun, attempt: RunAttempt | None) -> str:
    """The stored tail when no store holds the log: whole lines only when it was cut."""
    tail = run.output_tail or ""
    if attempt is not None and attempt.number != run.attempt:
        return ""
    if len(tail.encode()) >= settings.SPAWNER["TAIL_BYTES"] - 4 and "\n" in tail:
        tail = tail.split("\n", 1)[1]
    return tail


def _bad(message: str) -> HttpResponse:
    return HttpResponse(
        format_html('<p class="notice error" role="alert">{}</p>', message), status=400, content_type="text/html"
    )


def _attempt(run_id: int, number: int) -> RunAttempt:
    rows = RunAttempt.objects.select_related("run__agent_type", "run__batch")
    return get_object_or_404(rows, run_id=run_id, number=number)


@require_GET
@login_required
def log_lines(request: HttpRequest, run_id: int, number: int):
    """The output section for one attempt: `?page=N`, `?line=N` (its page, that line marked),
    or neither (the live tail of the current attempt; the last page of an earlier one)."""
    attempt = _attempt(run_id, number)
    try:
        page = selectors.log_parse_number(request.GET.get("page"), "page")
        line = selectors.log_parse_number(request.GET.get("line"), "line")
    except ValueError as exc:
        return _bad(str(exc))
    if request.GET.get("tail") and attempt.number == attempt.run.attempt:
        page = line = None
    if (line or page) and not getattr(request, "htmx", False):
        # A line's address opened on its own: the run page, at that line.
        target = line or (page - 1) * PAGE_LINES + 1
        return redirect(reverse("run", args=[attempt.run_id]) + f"#{anchor_prefix(attempt, attempt.run)}{target}")
    context = section_context(attempt.run, attempt, page=page, line=line)
    return render(request, "dashboard/_log.html#log-section", context)


@require_GET
@login_required
def log_search(request: HttpRequest, run_id: int, number: int):
    """Lines of the whole log holding the text asked for, each a link to its line."""
    attempt = _attempt(run_id, number)
    try:
        query = selectors.log_clean_query(request.GET.get("q"))
    except ValueError as exc:
        return _bad(str(exc))
    result = selectors.log_search(attempt, query) if query else None
    if result is not None:
        # The text found, marked (the query as a literal: escaped, never a pattern of the user's).
        found = re.compile(re.escape(query), re.IGNORECASE)
        for hit in result.hits:
            text = hit.text if len(hit.text) <= 300 else hit.text[:300] + "…"
            pieces, pos = [], 0
            for m in found.finditer(text):
                pieces += [escape(text[pos : m.start()]), f"<mark>{escape(m.group())}</mark>"]
                pos = m.end()
            hit.html = mark_safe("".join([*pieces, escape(text[pos:])]))
    context = {
        "run": attempt.run,
        "log_attempt": attempt,
        "query": query,
        "result": result,
        "prefix": anchor_prefix(attempt, attempt.run),
        "missing": query and result is None,
    }
    return render(request, "dashboard/_log.html#log-results", context)
