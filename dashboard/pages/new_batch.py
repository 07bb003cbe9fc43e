"""The new-batch page: build task rows or paste a spec, preview the plan, launch."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from dashboard.pages import starters
from dashboard.pages.forms import (
    BatchForm,
    SpecTextForm,
    TaskForm,
    place_errors,
    place_warnings,
    spec_text_from_forms,
)
from dashboard.pages.views import HtmxHttpRequest
from spawner import permissions, selectors, services
from spawner.errors import FieldError, SpecInvalid

BLANK_ROWS = 3


@dataclass
class Page:
    """Everything the new-batch template shows."""

    batch_form: BatchForm
    task_forms: list[TaskForm]
    text_form: SpecTextForm
    source: str = "form"  # which of the two was submitted: "form" or "yaml"
    errors: list[str] = field(default_factory=list)
    plan: selectors.Plan | None = None
    batch_spec: selectors.BatchSpec | None = None
    spec_text: str = ""
    cost: dict | None = None  # the estimated cost (selectors.plan_cost)
    cost_unconfirmed: bool = False  # a launch above SPAWNER_CONFIRM_COST_USD without the box ticked


def _catalog(request) -> dict:
    return {
        "agents": services.agent_catalog(),
        "roles": sorted(services.role_templates()),
        "is_admin": permissions.may_run_admin_only(request.user),
    }


def _initial_page(request, catalog: dict) -> Page:
    if (text := starters.build_text(request.GET.get("start", ""))) is not None:
        return Page(
            batch_form=BatchForm(),
            task_forms=[TaskForm(**catalog) for _ in range(BLANK_ROWS)],
            text_form=SpecTextForm(initial={"spec_text": text}),
            source="yaml",
        )
    start = starters.build(
        request.GET.get("start", ""), catalog["agents"], catalog["roles"], is_admin=catalog["is_admin"]
    )
    if start is None:
        rows = [{} for _ in range(BLANK_ROWS)]
        batch_initial: dict = {}
    else:
        rows = [
            {**t, "depends_on": ", ".join(t.get("depends_on", [])), "files": ", ".join(t.get("files", []))}
            for t in start["tasks"]
        ]
        batch_initial = {k: v for k, v in start.items() if k != "tasks"}
    return Page(
        batch_form=BatchForm(initial=batch_initial),
        task_forms=[TaskForm(initial=row, **catalog) for row in rows],
        text_form=SpecTextForm(),
    )


def _bound_page(request, catalog: dict) -> Page:
    """The submitted forms, and the spec text they stand for (empty if the forms are invalid)."""
    source = "yaml" if request.POST.get("source") == "yaml" else "form"
    rows = request.POST.getlist("rows")
    task_forms = [TaskForm(request.POST, prefix=row, **catalog) for row in rows if row.isalnum()]
    page = Page(
        batch_form=BatchForm(request.POST if source == "form" else None),
        task_forms=task_forms,
        text_form=SpecTextForm(request.POST if source == "yaml" else None, request.FILES or None),
        source=source,
    )
    if source == "yaml":
        page.task_forms = page.task_forms or [TaskForm(**catalog) for _ in range(BLANK_ROWS)]
        if page.text_form.is_valid():
            page.spec_text = page.text_form.cleaned_data["spec_text"]
        return page
    valid = page.batch_form.is_valid() & all([f.is_valid() for f in task_forms])
    page.task_forms = [f for f in task_forms if not (f.is_valid() and f.is_blank())] or task_forms
    if valid:
        page.spec_text = spec_text_from_forms(page.batch_form, page.task_forms)
    return page


def _check(page: Page, *, is_admin: bool) -> None:
    """Validate and plan the spec; put every error next to what it concerns."""
    if not page.spec_text:
        return
    try:
        page.batch_spec = services.spec_load(page.spec_text, is_admin=is_admin)
    except SpecInvalid as exc:
        page.errors += _place(page, exc.errors)
        return
    page.plan = services.batch_plan(page.batch_spec)
    page.cost = selectors.plan_cost(page.batch_spec)
    if page.batch_spec.unavailable:
        if page.source == "form":
            page.errors += place_warnings(page.batch_spec.unavailable, page.task_forms)
        else:
            page.errors += page.batch_spec.warnings


def _place(page: Page, errors: list[FieldError]) -> list[str]:
    if page.source == "form":
        return place_errors(errors, page.batch_form, page.task_forms)
    return [str(e) for e in errors]


@require_http_methods(["GET", "POST"])
@login_required
def batch_new(request: HtmxHttpRequest):
    catalog = _catalog(request)
    launching = request.method == "POST" and request.POST.get("action") == "launch"
    if launching and not permissions.may_launch(request.user):
        return render(request, "403.html", {"message": permissions.REFUSALS[permissions.may_launch]}, status=403)
    if request.method == "GET":
        page = _initial_page(request, catalog)
    else:
        page = _bound_page(request, catalog)
        _check(page, is_admin=permissions.may_run_admin_only(request.user))
        if launching and page.cost and page.cost["needs_confirm"] and not request.POST.get("confirm_cost"):
            page.cost_unconfirmed = True  # the browser asks before a batch spends much
        elif launching and page.batch_spec and not page.errors:
            try:
                batch = services.batch_launch(
                    batch_spec=page.batch_spec,
                    base_dir=settings.SPAWNER_WORKDIR,
                    owner=request.user,
                    confine=True,
                )
            except SpecInvalid as exc:
                page.errors += _place(page, exc.errors)
            else:
                return redirect("batch", batch_id=batch.id)
    context = {
        "page": page,
        "starters": [
            (key, title, about) for key, (title, about, _) in {**starters.STARTERS, **starters.YAML_STARTERS}.items()
        ],
        "agents": sorted(catalog["agents"].values(), key=lambda a: a.name),
        "can_launch": permissions.may_launch(request.user),
        "marked": _has_errors(page),
    }
    refused = page.errors or not page.spec_text or context["marked"] or page.cost_unconfirmed
    status = 400 if request.method == "POST" and refused else 200
    return render(request, "dashboard/batch_new.html", context, status=status)


def _has_errors(page: Page) -> bool:
    forms = [page.batch_form, page.text_form, *page.task_forms]
    return any(f.is_bound and f.errors for f in forms)


@require_GET
@login_required
def task_row(request: HtmxHttpRequest):
    """One more empty task row for the form (added without a reload)."""
    form = TaskForm(**_catalog(request))
    return render(request, "dashboard/batch_new.html#task-row", {"form": form})
