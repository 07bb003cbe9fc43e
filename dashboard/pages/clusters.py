"""The clusters page (admins only): every cluster in the registry with its host, workers busy and
total, last heartbeat, version and state, and a button to drain one for a deploy
(`services.cluster_drain`, as `manage.py spawner_cluster --drain NAME`)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from spawner import permissions, selectors, services
from spawner.errors import ActionRefused, NotAllowed


def _refused(request):
    return render(request, "403.html", {"message": permissions.REFUSALS[permissions.may_manage_clusters]}, status=403)


@require_GET
@login_required
def cluster_list(request):
    if not permissions.may_manage_clusters(request.user):
        return _refused(request)
    return render(request, "dashboard/clusters.html", {"clusters": selectors.clusters()})


@require_POST
@login_required
def cluster_drain(request):
    name = request.POST.get("name", "")
    try:
        row = services.cluster_drain(name=name, actor=request.user)
    except NotAllowed:
        return _refused(request)
    except ActionRefused as exc:
        messages.error(request, str(exc))
        return redirect("clusters")
    messages.success(
        request,
        f"Cluster {row.name} drains at its next reaper step: it takes nothing new, finishes what it runs, then exits.",
    )
    return redirect("clusters")
