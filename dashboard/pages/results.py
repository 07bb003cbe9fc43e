"""A batch's combined result: the page, its findings table, the review box and the exports."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_POST

from dashboard.pages import exports, fanin_queries
from dashboard.pages.fanin_queries import FindingFilters
from dashboard.pages.forms import ReviewForm
from dashboard.pages.views import HtmxHttpRequest
from spawner import permissions, services
from spawner.errors import ActionRefused, NotAllowed
from spawner.models import Aggregation, Batch


@require_GET
@login_required
def batch_result(request: HtmxHttpRequest, batch_id: int):
    """The page; an htmx request (sort, filter) gets only the findings table back."""
    batch = get_object_or_404(Batch.objects.select_related("owner"), id=batch_id)
    filters = FindingFilters.from_query(request.GET)
    if request.htmx and not (request.htmx.boosted or request.htmx.history_restore_request):
        if request.GET.get("reload"):
            # A page opened before the result existed: it has no findings section to update.
            return HttpResponse(status=204, headers={"HX-Refresh": "true"})
        if request.GET.get("fresh"):
            # The result was computed again: the findings as this reader filters them, gaps and agents.
            return render(request, "dashboard/result.html#refreshed", fanin_queries.result_context(batch, filters))
        agg = Aggregation.objects.filter(batch=batch).first()
        context = fanin_queries.findings_context(batch, agg.data if agg else {}, filters)
        return render(request, "dashboard/result.html#findings", {**context, "aggregation": agg})
    context = {**fanin_queries.result_context(batch, filters), **_reviewer(request, batch), "form": ReviewForm()}
    return render(request, "dashboard/result.html", context)


def _reviewer(request: HtmxHttpRequest, batch: Batch) -> dict:
    """What the review box shows this reader: the form if they may review, and whether their own
    approval counts (the owner's does not, unless SPAWNER REVIEW_OWNER_COUNTS)."""
    own = batch.owner_id is not None and batch.owner_id == request.user.id
    return {
        "may": permissions.page_may(request.user, batch),
        "own_batch": own,
        "owner_counts": settings.SPAWNER.get("REVIEW_OWNER_COUNTS", False),
    }


@require_POST
@login_required
def batch_review(request: HtmxHttpRequest, batch_id: int):
    """Approve, request changes or comment; the engine says what a decision needs."""
    batch = get_object_or_404(Batch, id=batch_id)
    form = ReviewForm(request.POST)
    error, status = "", 200
    if not permissions.may_review(request.user):
        error, status = permissions.REFUSALS[permissions.may_review], 403
    elif not form.is_valid():
        error, status = "choose approve, request changes or comment", 400
    else:
        try:
            services.review_submit(batch=batch, author=request.user, **form.cleaned_data)
        except NotAllowed as exc:
            error, status = str(exc), 403
        except ActionRefused as exc:
            error, status = str(exc), 409
    if not request.htmx:
        if status == 403:
            return render(request, "403.html", {"message": error}, status=403)
        (messages.error if error else messages.success)(request, error or "Your review is recorded.")
        return redirect("batch-result", batch_id=batch.id)
    context = {
        **fanin_queries.review_context(batch),
        **_reviewer(request, batch),
        "form": form if error else ReviewForm(),
        "error": error,
    }
    return render(request, "dashboard/result.html#review-box", context, status=status)


def _download(body: str, *, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response


@require_GET
@login_required
def batch_result_markdown(request: HtmxHttpRequest, batch_id: int):
    agg = get_object_or_404(Aggregation.objects.select_related("batch"), batch_id=batch_id)
    title = f"Batch #{agg.batch.id} {agg.batch.name}: combined result"
    return _download(
        exports.result_markdown(agg.data, title=title) + exports.review_markdown(exports.review_record(agg.batch)),
        content_type="text/markdown; charset=utf-8",
        filename=f"batch-{batch_id}-result.md",
    )


@require_GET
@login_required
def batch_result_json(request: HtmxHttpRequest, batch_id: int):
    """The aggregation exactly as `manage.py spawn --json` prints it under "aggregation", with the
    review beside it under "review" (state, approvals, each decision and comment)."""
    agg = get_object_or_404(Aggregation.objects.select_related("batch"), batch_id=batch_id)
    body = {**agg.data, "review": exports.review_record(agg.batch)}
    return _download(
        json.dumps(body, indent=2, ensure_ascii=False),
        content_type="application/json",
        filename=f"batch-{batch_id}-result.json",
    )
