"""Pages: the batches list, a batch, a run and its logs, a comparison. Reads only."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET
from django_htmx.middleware import HtmxDetails

from dashboard.ids import parse_id
from dashboard.pages import diffs, queries
from dashboard.pages.downloads import file_download
from spawner import permissions, selectors
from spawner.models import AgentRun, Batch, RunAttempt
from spawner.states import BatchStatus


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


@require_GET
@login_required
def batch_list(request: HtmxHttpRequest):
    filters = queries.ListFilters.from_query(request.GET)
    context = {
        **queries.list_context(filters),
        "owners": queries.owners(),
        "statuses": BatchStatus.choices,
        "ws_query": filters.querystring(page=filters.page),
        "may": permissions.page_may(request.user),
    }
    if request.htmx:
        return render(request, "dashboard/batch_list.html#batch-table", context)
    return render(request, "dashboard/batch_list.html", context)


@require_GET
@login_required
def batch_detail(request: HtmxHttpRequest, batch_id: int):
    batch = get_object_or_404(Batch.objects.select_related("owner", "sequential_of"), id=batch_id)
    context = {
        **queries.batch_context(batch),
        "may": permissions.page_may(request.user, batch),
    }
    return render(request, "dashboard/batch.html", context)


@require_GET
@login_required
def batch_json(request: HtmxHttpRequest, batch_id: int):
    batch = get_object_or_404(Batch, id=batch_id)
    return JsonResponse(selectors.batch_summary(batch))


@require_GET
@login_required
def compare(request: HtmxHttpRequest, batch_id: int):
    batch = get_object_or_404(Batch, id=batch_id)
    parallel, sequential = queries.compare_pair(batch)
    context = {**queries.compare_context(parallel, sequential), "may": permissions.page_may(request.user, batch)}
    return render(request, "dashboard/compare.html", context)


@require_GET
@login_required
def run_detail(request: HtmxHttpRequest, run_id: int):
    run = get_object_or_404(AgentRun.objects.select_related("batch", "agent_type"), id=run_id)
    number = parse_id(request.GET.get("attempt", ""))
    shown = diffs.diff_context(run, number=number, view=request.GET.get("view", "unified"))
    context = {**queries.run_context(run), **shown, "may": permissions.page_may(request.user, run.batch)}
    return render(request, "dashboard/run.html", context)


@require_GET
@login_required
def run_diff(request: HtmxHttpRequest, run_id: int, number: int):
    """The changes section for one attempt, unified or split (the page swaps it in)."""
    run = get_object_or_404(AgentRun.objects.select_related("batch", "agent_type"), id=run_id)
    get_object_or_404(RunAttempt, run_id=run_id, number=number)
    context = diffs.diff_context(run, number=number, view=request.GET.get("view", "unified"))
    return render(request, "dashboard/run.html#diff", context)


@require_GET
@login_required
def run_diff_download(request: HtmxHttpRequest, run_id: int, number: int):
    """The attempt's whole unified diff, streamed and masked like its log."""
    attempt = get_object_or_404(RunAttempt.objects.select_related("run__agent_type"), run_id=run_id, number=number)
    source = selectors.attempt_diff(attempt)
    if source is None:
        raise Http404(f"the diff of attempt {number} is not on this server")
    name = f"batch-{attempt.run.batch_id}-{attempt.run.key}-attempt-{number}.diff"
    secrets = selectors.log_secrets(attempt)
    masker = selectors.log_masker(secrets) if secrets else None
    return file_download(source, filename=name, content_type="text/x-diff; charset=utf-8", masker=masker)


def _log_source(attempt: RunAttempt):
    """The attempt's full log, opened, wherever it is kept (in place, shared storage, live rows)."""
    source = selectors.log_open(attempt)
    if source is None:
        raise Http404(f"the log of attempt {attempt.number} is not on this server")
    return source


@require_GET
@login_required
def run_log(request: HtmxHttpRequest, run_id: int, number: int):
    """An earlier piece of an attempt's log: the bytes just before `before` (default: before the tail)."""
    attempt = get_object_or_404(RunAttempt.objects.select_related("run__agent_type"), run_id=run_id, number=number)
    with selectors.log_opened(attempt) as source:
        if source is None:
            raise Http404(f"the log of attempt {attempt.number} is not on this server")
        size = source.size
        chunk = settings.DASHBOARD["LOG_CHUNK_BYTES"]
        try:
            end = int(request.GET["before"])
        except (KeyError, ValueError):
            end = size - settings.SPAWNER["TAIL_BYTES"]
        end = min(max(end, 0), size)
        start = max(0, end - chunk)
        data = selectors.log_range(source, start, end, selectors.log_secrets(attempt))
    if start > 0 and (newline := data.find(b"\n")) != -1:
        # Begin at a line start; the bytes before it come with the next, earlier piece.
        start, data = start + newline + 1, data[newline + 1 :]
    context = {
        "run": attempt.run,
        "attempt": attempt,
        "start": start,
        "end": end,
        "text": data.decode("utf-8", errors="replace"),
    }
    return render(request, "dashboard/run.html#log-chunk", context)


@require_GET
@login_required
def run_log_download(request: HtmxHttpRequest, run_id: int, number: int):
    attempt = get_object_or_404(RunAttempt.objects.select_related("run__agent_type"), run_id=run_id, number=number)
    source = _log_source(attempt)
    name = f"batch-{attempt.run.batch_id}-{attempt.run.key}-attempt-{number}.log"
    secrets = selectors.log_secrets(attempt)
    masker = selectors.log_masker(secrets) if secrets else None
    return file_download(source, filename=name, content_type="text/plain", masker=masker)
