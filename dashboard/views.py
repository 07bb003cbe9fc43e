from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_GET

from spawner.models import Batch


@require_GET
@login_required
def batch_list(request):
    batches = Batch.objects.select_related("owner")[:50]
    return render(request, "dashboard/batch_list.html", {"batches": batches})
