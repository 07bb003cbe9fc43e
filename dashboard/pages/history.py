"""The history of a batch name: a row per past batch, a cell per task, so a flaky task shows."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.pages.links import page_number, run_url_template
from spawner import selectors

NAME_MAX = 200  # Batch.name's length


@require_GET
@login_required
def batch_history(request: HttpRequest):
    """`?name=`: any signed-in person may read it, as they may read the batches list."""
    name = request.GET.get("name", "")[:NAME_MAX]
    history = selectors.batch_history(name, page=page_number(request.GET))
    url = run_url_template()
    glyphs = selectors.state_glyphs()
    for row in history["rows"]:
        for cell in row["cells"]:
            if cell:
                cell["url"] = url.format(cell["run_id"])
                cell["glyph"] = glyphs.get(cell["status"], "·")
                cell["words"] = cell["status"].replace("_", " ")
    return render(
        request, "dashboard/history.html", {**history, "glyphs": glyphs, "name_query": urlencode({"name": name})}
    )
