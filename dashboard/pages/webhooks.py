"""The webhook delivery log (admins only): every call queued, its tries and last error, and a
button to send one again through `services.webhook_redeliver`."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from spawner import permissions, selectors, services
from spawner.errors import ActionRefused, NotAllowed

STATES = ("pending", "delivered", "failed")


def _refused(request):
    return render(request, "403.html", {"message": services.WEBHOOKS_ADMIN_ONLY}, status=403)


@require_GET
@login_required
def webhook_list(request):
    if not permissions.may_run_admin_only(request.user):
        return _refused(request)
    state = request.GET.get("state", "")
    if state not in STATES:
        state = ""
    rows = selectors.webhook_deliveries(state=state)
    return render(request, "dashboard/webhooks.html", {"rows": rows, "state": state, "states": STATES})


@require_POST
@login_required
def webhook_redeliver(request, delivery_id: int):
    try:
        services.webhook_redeliver(delivery_id=delivery_id, actor=request.user)
    except NotAllowed:
        return _refused(request)
    except ActionRefused as exc:
        messages.error(request, str(exc))
        return redirect("webhooks")
    messages.success(request, f"Webhook call #{delivery_id} is queued again; the cluster sends it shortly.")
    return redirect("webhooks")
