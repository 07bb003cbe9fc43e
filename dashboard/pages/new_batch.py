"""The new-batch page: build task rows or paste a spec, preview the plan, launch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from dashboard.pages import starters
from dashboard.pages.forms import (
    BatchForm,
    Problem,
    SpecTextForm,
    TaskForm,
    form_message,
    form_problems,
    place_errors,
    spec_text_from_forms,
    yaml_problems,
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
    errors: list[str] = field(default_factory=list)  # errors that belong to no field
    spec_errors: list[FieldError] = field(default_factory=list)  # the YAML box's, for its summary
    plan: selectors.Plan | None = None
    batch_spec: selectors.BatchSpec | None = None
    spec_text: str = ""
    all_blank: bool = False  # every task row was left empty
    cost: dict | None = None  # the estimated cost (selectors.plan_cost)
    cost_unconfirmed: bool = False  # a launch above SPAWNER_CONFIRM_COST_USD without the box ticked
    checks: list[services.LaunchCheck] = field(default_factory=list)  # before launch: each must pass
    refused: list[str] = field(default_factory=list)  # what the failed checks said that belongs to no field
    refused_messages: set[str] = field(default_factory=set)  # marked on fields by a failed check

    @property
    def problems(self) -> list[Problem]:
        """Every error on the page, each with a link to its field, for the summary at the top."""
        if self.source == "yaml":
            text_errors = [str(e) for e in self.text_form.non_field_errors()] if self.text_form.is_bound else []
            return yaml_problems(self.spec_errors, [*text_errors, *self.errors])
        found = form_problems(self.batch_form, self.task_forms, self.errors)
        return [p for p in found if p.message not in self.refused_messages]

    @property
    def refusals(self) -> list[services.LaunchCheck]:
        return [c for c in self.checks if not c.ok]

    @property
    def launchable(self) -> bool:
        return self.plan is not None and not self.problems and not self.refusals


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
    """The submitted forms, and the spec text they stand for (empty if a task row is invalid)."""
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
    page.batch_form.is_valid()
    rows_valid = all([f.is_valid() for f in task_forms])
    filled = [f for f in task_forms if not (f.is_valid() and f.is_blank())]
    page.all_blank = rows_valid and not filled
    page.task_forms = filled or task_forms
    if rows_valid:
        # Written even when a batch field is refused, so the spec's checks run too: every error at once.
        page.spec_text = spec_text_from_forms(page.batch_form, filled)
    return page


def _check(page: Page, *, user) -> None:
    """Validate and plan the spec, and check what a launch would refuse; put every error next to
    what it concerns."""
    if not page.spec_text:
        return
    try:
        page.batch_spec, admin_only = services.spec_load_for(page.spec_text, actor=user)
    except SpecInvalid as exc:
        _place(page, exc.errors)
        return
    page.plan = services.batch_plan(page.batch_spec)
    page.cost = selectors.plan_cost(page.batch_spec)
    page.checks = services.launch_checks(
        page.batch_spec, actor=user, base_dir=Path(settings.SPAWNER_WORKDIR), confine=True, admin_only=admin_only
    )
    if page.source == "form":
        # Marked on the fields they concern too; said once, in the plan's checks, not as spec problems.
        refused = [e for check in page.refusals for e in check.errors]
        page.refused = place_errors(refused, page.batch_form, page.task_forms, words=True)
        page.refused_messages = {form_message(e) for e in refused}


def _place(page: Page, errors: list[FieldError]) -> None:
    if page.source == "form":
        page.errors += place_errors(errors, page.batch_form, page.task_forms, words=True)
    else:
        page.spec_errors += errors


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
        _check(page, user=request.user)
        # Only a plan whose every check passed launches: a spec read as an admin would read it (to show
        # a member its plan) never does, since its "admins only" check fails.
        if launching and page.launchable and page.cost["needs_confirm"] and not request.POST.get("confirm_cost"):
            page.cost_unconfirmed = True  # the browser asks before a batch spends much
        elif launching and page.launchable:
            try:
                batch = services.batch_launch(
                    batch_spec=page.batch_spec,
                    base_dir=settings.SPAWNER_WORKDIR,
                    owner=request.user,
                    confine=True,
                )
            except SpecInvalid as exc:  # something changed since the checks (a file, a commit)
                _place(page, exc.errors)
            else:
                return redirect("batch", batch_id=batch.id)
    context = {
        "page": page,
        "starters": starters.offered(catalog["agents"], is_admin=catalog["is_admin"]),
        "starters_note": starters.coding_note(catalog["agents"], is_admin=catalog["is_admin"]),
        "agents": sorted(catalog["agents"].values(), key=lambda a: a.name),
        "can_launch": permissions.may_launch(request.user),
    }
    refused = bool(page.problems) or not page.spec_text or (launching and not page.launchable)
    status = 400 if request.method == "POST" and (refused or page.cost_unconfirmed) else 200
    return render(request, "dashboard/batch_new.html", context, status=status)


@require_GET
@login_required
def task_row(request: HtmxHttpRequest):
    """One more empty task row for the form (added without a reload)."""
    form = TaskForm(**_catalog(request))
    return render(request, "dashboard/batch_new.html#task-row", {"form": form})
