"""GET /api/clusters: the cluster registry, for admins (a token of scope admin, or an admin's session).
Its own router, beside the batch and run endpoints."""

from __future__ import annotations

from ninja import Router

from dashboard.api import schemas
from spawner import permissions, selectors
from spawner.errors import NotAllowed
from spawner.models import ApiToken

router = Router()
ERRORS = {401: schemas.Problem, 403: schemas.Problem}


@router.get("/clusters", response={200: list[schemas.ClusterOut], **ERRORS}, url_name="clusters", tags=["clusters"])
def cluster_list(request):
    """Every cluster seen in the last hour: name, host, version, workers busy and total, last heartbeat,
    state (running, draining, or silent past its lease). Drain one with `manage.py spawner_cluster
    --drain NAME` or the clusters page."""
    token = getattr(request, "api_token", None)
    if token is not None and token.scope != ApiToken.Scope.ADMIN:
        raise NotAllowed(f"the clusters need a token of scope admin; this one's scope is {token.scope}")
    permissions.require(request.auth, permissions.may_manage_clusters)
    return [
        {
            "name": c.name,
            "host": c.host,
            "pid": c.pid,
            "version": c.version,
            "state": c.shown_state,
            "workers": c.workers,
            "busy": c.busy,
            "started_at": c.started_at,
            "last_heartbeat": c.seen_at,
            "heartbeat_age_seconds": round(c.age, 3),
            "drain_requested_at": c.drain_requested_at,
            "drain_requested_by": c.drain_requested_by,
        }
        for c in selectors.clusters()
    ]
