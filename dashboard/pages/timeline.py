"""A batch's whole timeline as a fragment: a big batch's page fetches it when it is scrolled into view."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from dashboard.pages.queries import timeline
from spawner.models import Batch


@require_GET
@login_required
def batch_timeline(request: HttpRequest, batch_id: int):
    batch = get_object_or_404(Batch, id=batch_id)
    return render(request, "dashboard/batch.html#timeline", {"timeline": timeline(batch)})
