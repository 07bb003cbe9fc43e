"""The escalations queue: what failed and needs a person, and the buttons that decide it.

Each action calls a service (`spawner.services`) with the user as the actor. An htmx post gets the
escalation's card back, with the refusal (if any) next to its forms; a plain form
post gets a message and a redirect to the queue.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard.pages import fanin_queries
from dashboard.pages.fanin_queries import QueueFilters
from dashboard.pages.forms import AssignForm, ResolveForm
from dashboard.pages.views import HtmxHttpRequest
from spawner import permissions, services
from spawner.errors import ActionRefused, NotAllowed
from spawner.models import Escalation


@require_GET
@login_required
def escalation_list(request: HtmxHttpRequest):
    filters = QueueFilters.from_query(request.GET)
    context = {
        **fanin_queries.queue_context(filters, request.user.id),
        "ws_query": filters.querystring(page=filters.page),
        "may": permissions.page_may(request.user),
    }
    if request.htmx and not (request.htmx.boosted or request.htmx.history_restore_request):
        return render(request, "dashboard/escalations.html#queue", context)
    return render(request, "dashboard/escalations.html", context)


def _answer(request: HtmxHttpRequest, escalation: Escalation, *, error: str = "", done: str = "", status: int = 200):
    """The card as it is now, saying what happened; or, without htmx, a message and the queue."""
    if not request.htmx:
        if status == 403:
            return render(request, "403.html", {"message": error}, status=403)
        (messages.error if error else messages.success)(request, error or done)
        return redirect("escalations")
    context = {
        **fanin_queries.card_context(escalation.id),
        "may": permissions.page_may(request.user),
        "error": error,
        "done": done,
        "answering": True,
    }
    return render(request, "dashboard/escalations.html#escalation-card", context, status=status)


@require_POST
@login_required
def escalation_assign(request: HtmxHttpRequest, escalation_id: int):
    escalation = get_object_or_404(Escalation, id=escalation_id)
    if not permissions.may_resolve_escalations(request.user):
        return _answer(request, escalation, error=permissions.REFUSALS[permissions.may_resolve_escalations], status=403)
    form = AssignForm(request.POST)
    if not form.is_valid():
        return _answer(request, escalation, error="choose a teammate from the list", status=400)
    assignee = form.cleaned_data["assignee"]
    try:
        services.escalation_assign(escalation=escalation, assignee=assignee, actor=request.user)
    except NotAllowed as exc:
        return _answer(request, escalation, error=str(exc), status=403)
    except ActionRefused as exc:
        return _answer(request, escalation, error=str(exc), status=409)
    who = assignee.get_username() if assignee else "nobody"
    return _answer(request, escalation, done=f"Assigned to {who}.")


@require_POST
@login_required
def escalation_resolve(request: HtmxHttpRequest, escalation_id: int):
    """Retry the run (needs the launch permission, like any retry), accept the partial result, or dismiss."""
    escalation = get_object_or_404(Escalation.objects.select_related("run__agent_type"), id=escalation_id)
    if not permissions.may_resolve_escalations(request.user):
        return _answer(request, escalation, error=permissions.REFUSALS[permissions.may_resolve_escalations], status=403)
    form = ResolveForm(request.POST)
    if not form.is_valid():
        return _answer(request, escalation, error="choose retry, accept or dismiss", status=400)
    action, note = form.cleaned_data["action"], form.cleaned_data["note"]
    if action == "retry":
        if not permissions.may_launch(request.user):
            return _answer(request, escalation, error="you need the permission to launch batches to retry", status=403)
        if escalation.run and (refusal := permissions.admin_only_refusal(request.user, [escalation.run])):
            return _answer(request, escalation, error=refusal, status=403)
    try:
        services.escalation_resolve(escalation=escalation, action=action, note=note, actor=request.user)
    except NotAllowed as exc:
        return _answer(request, escalation, error=str(exc), status=403)
    except ActionRefused as exc:
        return _answer(request, escalation, error=str(exc), status=409)
    done = {
        "retry": f"Retrying '{escalation.run.key if escalation.run else ''}': a new attempt is queued.",
        "accept": "Accepted the partial result.",
        "dismiss": "Dismissed.",
    }[action]
    return _answer(request, escalation, done=done)
