"""Saved batch templates: the list (and saving one), a template's page (launch it with its
variables, change it, schedule it) and its launches over time, like a pipeline's history."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Max, Sum
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from spawner import permissions, selectors, services
from spawner.errors import CostUnconfirmed, NotAllowed, SpecInvalid
from spawner.models import AgentRun, Batch, BatchTemplate, TemplateSchedule

HISTORY = 100
MAX_TEXT = 1_000_000


def _forbidden(request, message: str):
    return render(request, "403.html", {"message": message}, status=403)


def _declared_text(template: BatchTemplate) -> str:
    return "\n".join(n if d is None else f"{n}={d}" for n, d in template.variables.items())


def _values(post, template: BatchTemplate) -> dict[str, str]:
    return {name: post.get(f"var_{name}", "") for name in template.variables}


@require_http_methods(["GET", "POST"])
@login_required
def template_list(request):
    """GET: every template. POST: save a new one (the spec from a batch with ?batch=ID)."""
    form = {"name": "", "description": "", "spec_text": "", "variables": "", "shared": False}
    errors: list = []
    status = 200
    if request.method == "POST":
        if not permissions.may_launch(request.user):
            return _forbidden(request, permissions.REFUSALS[permissions.may_launch])
        form = {k: request.POST.get(k, "")[:MAX_TEXT] for k in ("name", "description", "spec_text", "variables")}
        form["shared"] = bool(request.POST.get("shared"))
        try:
            template = services.template_save(
                actor=request.user,
                name=form["name"].strip(),
                spec_text=form["spec_text"],
                variables_text=form["variables"],
                description=form["description"].strip(),
                shared=form["shared"],
            )
        except NotAllowed as exc:
            return _forbidden(request, str(exc))
        except SpecInvalid as exc:  # a name already taken is a conflict (409), the rest bad input
            errors, status = exc.errors, 409 if isinstance(exc, services.TemplateNameTaken) else 400
        else:
            messages.success(request, f"Template “{template.name}” is saved.")
            return redirect("template", template_id=template.id)
    elif (batch_id := request.GET.get("batch", "")).isdigit():
        batch = Batch.objects.filter(id=int(batch_id)).first()
        if batch is not None:
            form.update(name=batch.name.lower().replace(" ", "-")[:100], spec_text=batch.spec_text)
    templates = (
        BatchTemplate.objects.select_related("owner")
        .annotate(launch_count=Count("launches", distinct=True), last_launch=Max("launches__launched_at"))
        .annotate(schedule_count=Count("schedules", distinct=True))
    )
    context = {
        "templates": templates,
        "form": form,
        "errors": errors,
        "can_launch": permissions.may_launch(request.user),
        "is_admin": permissions.may_run_admin_only(request.user),
    }
    return render(request, "dashboard/templates.html", context, status=status)


def _history(template: BatchTemplate) -> list[dict]:
    batches = list(Batch.objects.filter(template=template).select_related("owner").order_by("-id")[:HISTORY])
    costs = dict(
        AgentRun.objects.filter(batch__in=batches).order_by().values_list("batch_id").annotate(total=Sum("cost_usd"))
    )
    return [{"batch": b, "cost": costs.get(b.id)} for b in batches]


def _page(request, template: BatchTemplate, *, status=200, **extra):
    may_edit = services.may_edit_template(request.user, template)
    schedules = list(TemplateSchedule.objects.filter(template=template).select_related("schedule", "run_as"))
    outcomes = selectors.schedule_outcomes(schedules)
    for s in schedules:  # the next run in the schedule's own time zone, and how the last one went
        s.outcome = outcomes.get(s.id)
        local = s.schedule.next_run.astimezone(ZoneInfo(s.timezone)) if s.schedule.next_run else None
        s.next_local = local.strftime("%a %Y-%m-%d %H:%M") if local else ""
    history = _history(template)
    values = extra.get("values", {})
    context = {
        "template": template,
        "variables": [{"name": n, "default": d, "value": values.get(n, "")} for n, d in template.variables.items()],
        "schedules": schedules,
        "history": history,
        "strip": list(reversed(history[:40])),
        "can_launch": permissions.may_launch(request.user),
        "launch_refusal": permissions.REFUSALS[permissions.may_launch],
        "may_edit": may_edit,
        "edit": extra.get("edit")
        or {
            "name": template.name,
            "description": template.description,
            "spec_text": template.spec_text,
            "variables": _declared_text(template),
        },
        "launch_errors": extra.get("launch_errors", []),
        "cost_confirm": extra.get("cost_confirm", ""),
        "edit_errors": extra.get("edit_errors", []),
        "schedule_errors": extra.get("schedule_errors", []),
        "schedule_form": extra.get("schedule_form") or {"cron": "0 3 * * *", "timezone": "UTC"},
    }
    return render(request, "dashboard/template.html", context, status=status)


@require_http_methods(["GET", "POST"])
@login_required
def template_detail(request, template_id: int):
    """GET: the template, its schedules and launches. POST: launch it with the variables filled."""
    template = get_object_or_404(BatchTemplate.objects.select_related("owner"), id=template_id)
    if request.method == "GET":
        return _page(request, template)
    if not permissions.may_launch(request.user):
        return _forbidden(request, permissions.REFUSALS[permissions.may_launch])
    values = _values(request.POST, template)
    confirmed = request.POST.get("confirm_cost") == "1"
    try:
        batch = services.template_launch(template=template, values=values, actor=request.user, confirm_cost=confirmed)
    except NotAllowed as exc:
        return _forbidden(request, str(exc))
    except CostUnconfirmed as exc:  # the browser asks, as the new-batch page does
        return _page(request, template, status=400, cost_confirm=str(exc.cost["confirm_reason"]), values=values)
    except SpecInvalid as exc:
        return _page(request, template, status=400, launch_errors=exc.errors, values=values)
    return redirect("batch", batch_id=batch.id)


@require_POST
@login_required
def template_edit(request, template_id: int):
    """Change the template (action=save) or delete it (action=delete): its owner or an admin."""
    template = get_object_or_404(BatchTemplate.objects.select_related("owner"), id=template_id)
    if not services.may_edit_template(request.user, template):
        return _forbidden(request, "only its owner or an admin (with the permission to launch) may change it")
    if request.POST.get("action") == "delete":
        services.template_delete(template=template, actor=request.user)
        messages.success(request, f"Template “{template.name}” is deleted; its batches stay.")
        return redirect("templates")
    edit = {k: request.POST.get(k, "")[:MAX_TEXT] for k in ("name", "description", "spec_text", "variables")}
    try:
        services.template_save(
            actor=request.user,
            name=edit["name"].strip(),
            spec_text=edit["spec_text"],
            variables_text=edit["variables"],
            description=edit["description"].strip(),
            shared=template.owner_id is None,
            template=template,
        )
    except NotAllowed as exc:
        return _forbidden(request, str(exc))
    except SpecInvalid as exc:
        template.refresh_from_db()
        return _page(request, template, status=400, edit_errors=exc.errors, edit=edit)
    messages.success(request, "Template saved.")
    return redirect("template", template_id=template.id)


@require_POST
@login_required
def schedule_create(request, template_id: int):
    """A cron schedule on the template, run as the person who made it."""
    template = get_object_or_404(BatchTemplate.objects.select_related("owner"), id=template_id)
    if not services.may_edit_template(request.user, template):
        return _forbidden(request, "only its owner or an admin (with the permission to launch) may schedule it")
    form = {"cron": request.POST.get("cron", "")[:200], "timezone": request.POST.get("timezone", "UTC")[:100]}
    values = _values(request.POST, template)
    try:
        services.schedule_create(
            template=template, cron=form["cron"], tz=form["timezone"].strip(), values=values, actor=request.user
        )
    except NotAllowed as exc:
        return _forbidden(request, str(exc))
    except SpecInvalid as exc:
        return _page(request, template, status=400, schedule_errors=exc.errors, schedule_form=form, values=values)
    messages.success(request, f"Scheduled: {form['cron']} ({form['timezone']}).")
    return redirect("template", template_id=template.id)


@require_POST
@login_required
def schedule_action(request, schedule_id: int):
    """Pause, resume or delete a schedule: the template's owner or an admin."""
    link = get_object_or_404(TemplateSchedule.objects.select_related("template", "schedule"), id=schedule_id)
    action = request.POST.get("action", "")
    try:
        if action == "delete":
            services.schedule_delete(link=link, actor=request.user)
        elif action in ("pause", "resume"):
            services.schedule_set_paused(link=link, paused=action == "pause", actor=request.user)
        else:
            return render(request, "403.html", {"message": "action: pause, resume or delete"}, status=400)
    except NotAllowed as exc:
        return _forbidden(request, str(exc))
    done = {"delete": "Schedule deleted.", "pause": "Schedule paused.", "resume": "Schedule resumed."}
    messages.success(request, done[action])
    return redirect("template", template_id=link.template_id)
