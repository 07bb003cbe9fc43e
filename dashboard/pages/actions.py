"""Buttons: cancel, retry and re-run. Each calls a service with the user as the actor.

An htmx post gets a notice back (the page itself updates over the websocket); a
plain form post gets a message and a redirect.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from dashboard.pages.views import HtmxHttpRequest
from spawner import services
from spawner.errors import NotAllowed, SpecInvalid
from spawner.models import AgentRun, Batch
from spawner.states import Mode


def _answer(request: HtmxHttpRequest, back: str, message: str, *, status: int = 200, about: str = ""):
    """Success (200) or refusal (403 not allowed, 409 not applicable now), said the way the caller asked.

    `about`: the page elements whose end makes the notice stale (see static/clock.js); it goes away
    then, and the live page says what happened. Every notice can be closed."""
    if request.htmx:
        level = "ok" if status == 200 else "error"
        context = {"message": message, "level": level, "about": about if status == 200 else ""}
        return render(request, "dashboard/notice.html", context, status=status)
    if status == 403:
        return render(request, "403.html", {"message": message}, status=403)
    (messages.success if status == 200 else messages.error)(request, message)
    return redirect(back)


def _attempt(request: HtmxHttpRequest, back: str, action):
    """Call the service: (what it returned, None), or (None, the answer to its refusal: 403 not allowed,
    409 not applicable now)."""
    try:
        return action(), None
    except NotAllowed as exc:
        return None, _answer(request, back, str(exc), status=403)
    except services.ActionRefused as exc:
        return None, _answer(request, back, str(exc), status=409)


@require_POST
@login_required
def batch_cancel(request: HtmxHttpRequest, batch_id: int):
    batch = get_object_or_404(Batch, id=batch_id)
    back = reverse("batch", args=[batch.id])
    _, refused = _attempt(request, back, lambda: services.batch_cancel(batch=batch, actor=request.user))
    message = f"Cancelling batch #{batch.id}: running agents are being stopped."
    return refused or _answer(request, back, message, about="batch-header")


@require_POST
@login_required
def batch_retry_failed(request: HtmxHttpRequest, batch_id: int):
    batch = get_object_or_404(Batch, id=batch_id)
    back = reverse("batch", args=[batch.id])
    outcome, refused = _attempt(request, back, lambda: services.batch_retry_failed(batch=batch, actor=request.user))
    if refused:
        return refused
    retried, skipped = outcome
    message = f"Retrying {len(retried)} run{'s' if len(retried) != 1 else ''}: {', '.join(retried)}."
    rows = AgentRun.objects.filter(batch_id=batch.id, key__in=retried).values_list("id", "attempt")
    about = " ".join(f"run-{run_id}:{attempt - 1}" for run_id, attempt in rows)
    return _answer(request, back, message + (f" Not retried: {'; '.join(skipped)}" if skipped else ""), about=about)


@require_POST
@login_required
def batch_rerun_sequential(request: HtmxHttpRequest, batch_id: int):
    batch = get_object_or_404(Batch, id=batch_id)
    back = reverse("batch", args=[batch.id])
    if batch.mode != Mode.PARALLEL:
        return _answer(request, back, "this batch already ran sequentially", status=409)
    try:
        rerun, refused = _attempt(
            request, back, lambda: services.batch_rerun_sequential(batch=batch, actor=request.user)
        )
    except SpecInvalid as exc:
        return _answer(request, back, f"the stored spec no longer launches: {exc}", status=409)
    if refused:
        return refused
    target = reverse("compare", args=[rerun.id])
    return HttpResponseClientRedirect(target) if request.htmx else redirect(target)


@require_POST
@login_required
def run_cancel(request: HtmxHttpRequest, run_id: int):
    run = get_object_or_404(AgentRun.objects.select_related("batch"), id=run_id)
    back = reverse("run", args=[run.id])
    _, refused = _attempt(request, back, lambda: services.run_cancel(run=run, actor=request.user))
    return refused or _answer(request, back, f"Cancelled run '{run.key}'.")


@require_POST
@login_required
def run_retry(request: HtmxHttpRequest, run_id: int):
    run = get_object_or_404(AgentRun.objects.select_related("batch", "agent_type"), id=run_id)
    back = reverse("run", args=[run.id])
    _, refused = _attempt(request, back, lambda: services.run_retry(run=run, actor=request.user))
    message = f"Retrying '{run.key}': attempt {run.attempt + 1} is queued."
    return refused or _answer(request, back, message, about=f"run-header:{run.attempt}")
