"""Every write the outside world asks for: the browser, the CLI and the Python API call these."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from statistics import median

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from spawner import permissions, spec
from spawner.core import budget as budget_rules
from spawner.core import changes as changes_rules
from spawner.core import merge_queue as merge_rules
from spawner.core import netcheck, planning
from spawner.engine import budgets, dispatch, events, git, merging, prompts, transitions, workspaces
from spawner.errors import ActionRefused, CostUnconfirmed, NotAllowed
from spawner.models import (
    AgentRun,
    AgentType,
    ApiToken,
    Batch,
    Escalation,
    IdempotencyKey,
    MergeStep,
    Review,
    Role,
    RunAttempt,
    Workspace,
)
from spawner.states import RUN_FAILED, RUN_TERMINAL, BatchStatus, EventKind, FailurePolicy, Mode, RunStatus, Strategy

__all__ = ["ActionRefused"]


def spec_limits() -> spec.Limits:
    s = settings.SPAWNER
    return spec.Limits(
        max_tasks=s["MAX_TASKS"],
        max_parallel=s["MAX_PARALLEL"],
        max_timeout=s["MAX_TIMEOUT"],
        max_retries=s["MAX_RETRIES"],
        webhook_allow_hosts=netcheck.allow_list(s["WEBHOOK_ALLOW_HOSTS"]),
    )


def agent_catalog() -> dict[str, spec.AgentInfo]:
    return {
        t.name: spec.AgentInfo(
            name=t.name,
            available=t.available,
            reason=t.unavailable_reason,
            admin_only=t.admin_only,
            default_timeout=t.default_timeout,
        )
        for t in AgentType.objects.all()
    }


def role_templates() -> dict[str, str]:
    return dict(Role.objects.values_list("name", "template"))


def spec_load(text: str, *, is_admin: bool) -> spec.BatchSpec:
    """Parse and validate a spec against this server's agent types and roles."""
    return spec.load(text, agents=agent_catalog(), roles=role_templates(), limits=spec_limits(), is_admin=is_admin)


def past_durations(batch_spec: spec.BatchSpec) -> dict[str, float]:
    """Median duration of earlier successful runs with the same key and agent type."""
    found: dict[str, list[float]] = {}
    rows = AgentRun.objects.filter(
        key__in=[t.key for t in batch_spec.tasks],
        status=RunStatus.SUCCEEDED,
        duration_seconds__isnull=False,
    ).values_list("key", "agent_type__name", "duration_seconds")[:5000]
    agent_of = {t.key: t.agent for t in batch_spec.tasks}
    for key, agent, seconds in rows:
        if agent_of.get(key) == agent:
            found.setdefault(key, []).append(seconds)
    return {key: median(values) for key, values in found.items()}


def batch_plan(batch_spec: spec.BatchSpec, *, sequential: bool | None = None) -> planning.Plan:
    return planning.make_plan(
        batch_spec.plan_tasks(past_durations(batch_spec)),
        max_parallel=batch_spec.max_parallel,
        sequential=batch_spec.mode == Mode.SEQUENTIAL if sequential is None else sequential,
        aggregation=batch_spec.aggregation,
    )


def batch_check(batch_spec: spec.BatchSpec, base_dir: Path, *, confine: bool = False) -> tuple[Path, dict[str, Path]]:
    """What only this server can check: agent types it can run, directories that exist, and
    (with `confine`, for browser and API users) working directories inside `base_dir`.

    Returns the resolved working directories of the batch and of each task; pass them to
    `batch_launch(checked=...)` so the launch does not check again.
    """
    index = {t.key: i for i, t in enumerate(batch_spec.tasks)}
    errors = [
        spec.FieldError(f"task '{key}'", "agent", why, key, index.get(key)) for key, why in batch_spec.unavailable
    ]
    base = base_dir.resolve()
    batch_cwd = (base / batch_spec.cwd).resolve()
    outside = confine and not batch_cwd.is_relative_to(base)

    def shown(path: Path) -> str:
        # A browser user is told paths relative to the base directory, never the server's own.
        return repr(os.path.relpath(path, base)) if confine and path.is_relative_to(base) else str(path)

    if outside:
        errors.append(spec.FieldError("batch", "cwd", _outside(batch_spec.cwd)))
    elif not batch_cwd.is_dir():
        errors.append(spec.FieldError("batch", "cwd", f"directory {shown(batch_cwd)} does not exist"))
    if len(str(batch_cwd)) > spec.MAX_CWD_CHARS:
        errors.append(spec.FieldError("batch", "cwd", f"the full path is over {spec.MAX_CWD_CHARS} characters"))
    task_cwds = {}
    for t in batch_spec.tasks:
        path = (batch_cwd / t.cwd).resolve()
        where = f"task '{t.key}'"
        if outside:
            pass  # said once, for the batch
        elif confine and not path.is_relative_to(base):
            errors.append(spec.FieldError(where, "cwd", _outside(t.cwd), t.key, index[t.key]))
        elif t.cwd and not path.is_dir():
            errors.append(spec.FieldError(where, "cwd", f"directory {shown(path)} does not exist", t.key, index[t.key]))
        elif len(str(path)) > spec.MAX_CWD_CHARS:
            message = f"the full path is over {spec.MAX_CWD_CHARS} characters"
            errors.append(spec.FieldError(f"task '{t.key}'", "cwd", message, t.key))
        task_cwds[t.key] = path
    errors += prompts.launch_errors(batch_spec, task_cwds)
    if (ws := batch_spec.workspace) and ws.isolated and not outside:
        try:
            workspaces.checkpoint(ws, batch_cwd, confine_to=base if confine else None, snapshot=False)
        except spec.SpecInvalid as exc:
            errors += exc.errors
    if errors:
        raise spec.SpecInvalid(errors)
    return batch_cwd, task_cwds


def _outside(cwd: str) -> str:
    return (
        f"{cwd!r} leads outside the base directory, and a path must stay inside it (relative paths "
        "start there: the project root unless SPAWNER_WORKDIR says otherwise): write '.' for the base "
        "directory itself, or a folder inside it such as 'src'"
    )


def spec_base_dir(spec_file: Path) -> Path:
    """Where the relative paths of a spec file start: the base directory (SPAWNER_WORKDIR, the one
    the browser uses) when the file is inside it, so a spec of the project means the same in the
    terminal and in the browser; otherwise the file's own directory."""
    base = Path(settings.SPAWNER_WORKDIR).resolve()
    folder = spec_file.resolve().parent
    return base if folder.is_relative_to(base) else folder


# --- before launch: what a plan shows, so that a plan with every check passed launches --------


@dataclasses.dataclass(frozen=True)
class LaunchCheck:
    """One reason a launch could be refused, checked at plan time: passed, or why not."""

    name: str
    ok: bool
    detail: str
    errors: tuple[spec.FieldError, ...] = ()  # each on the field it concerns


def spec_load_for(text: str, *, actor) -> tuple[spec.BatchSpec, list[spec.FieldError]]:
    """Read a spec for this person's plan: (the spec, what in it only an admin may launch).

    A spec whose only errors are that its author is not an admin (the shell agent type, a webhook,
    a workspace's setup or gate) is read as an admin would, so its plan shows; `launch_checks` then
    refuses it, with those errors as the reason."""
    is_admin = actor is None or permissions.may_run_admin_only(actor)
    try:
        return spec_load(text, is_admin=is_admin), []
    except spec.SpecInvalid as exc:
        if is_admin or not exc.errors or not all(e.admin_only for e in exc.errors):
            raise
        refused = exc.errors
    return spec_load(text, is_admin=True), refused


def launch_checks(
    batch_spec: spec.BatchSpec,
    *,
    actor,
    base_dir: Path,
    confine: bool = True,
    admin_only: list[spec.FieldError] | tuple = (),
) -> list[LaunchCheck]:
    """Everything `batch_launch` (and the page that calls it) would refuse, known before launch:
    the permission to launch, admin-only agent types and settings, agent types this server cannot
    run, working directories, path prompts and the workspace, and the owner's daily budget."""
    checks = []
    allowed = actor is None or permissions.may_launch(actor)
    checks.append(
        LaunchCheck(
            "permission to launch",
            allowed,
            "you may launch batches" if allowed else permissions.REFUSALS[permissions.may_launch],
        )
    )
    if admin_only:
        concerns: dict[str, list[str]] = {}
        for e in admin_only:
            concerns.setdefault(e.message if e.task else f"{e.field}: {e.message}", []).append(e.task or "")
        what = [f"{m} ({', '.join(k for k in keys if k)})" if any(keys) else m for m, keys in concerns.items()]
        checks.append(LaunchCheck("admins only", False, "; ".join(what), tuple(admin_only)))
    found: list[spec.FieldError] = []
    try:
        batch_check(batch_spec, base_dir, confine=confine)
    except spec.SpecInvalid as exc:
        found = exc.errors
    agents = [e for e in found if e.field == "agent"]
    if agents:
        by_type: dict[str, list[str]] = {}
        for t in batch_spec.tasks:
            if any(e.task == t.key for e in agents):
                by_type.setdefault(t.agent, []).append(t.key)
        reasons = dict(batch_spec.unavailable)
        detail = "; ".join(
            f"{name} for {', '.join(keys)}: {reasons[keys[0]].split(': ', 1)[-1]}" for name, keys in by_type.items()
        )
        checks.append(LaunchCheck("agents available", False, "not available here: " + detail, tuple(agents)))
    else:
        names = ", ".join(sorted({t.agent for t in batch_spec.tasks}))
        checks.append(LaunchCheck("agents available", True, f"this server can run {names}"))
    places = [e for e in found if e.field == "cwd" or e.field == "prompt"]
    checks.append(
        LaunchCheck(
            "directories",
            not places,
            "; ".join(f"{e.where}: {e.field}: {e.message}" if e.task else f"{e.field}: {e.message}" for e in places)
            or f"every working directory exists{' inside the base directory' if confine else ''}, "
            "and every path prompt stays in it",
            tuple(places),
        )
    )
    if batch_spec.workspace and batch_spec.workspace.isolated:
        ws = [e for e in found if e.field.startswith("workspace")]
        detail = "; ".join(f"{e.field}: {e.message}" for e in ws) or (
            f"{batch_spec.workspace.repo!r} is a clean git checkout: each run gets its own worktree"
        )
        checks.append(LaunchCheck("workspace", not ws, detail, tuple(ws)))
    try:
        launch_budget_check(batch_spec, actor)
    except spec.SpecInvalid as exc:
        checks.append(LaunchCheck("daily budget", False, exc.errors[0].message, tuple(exc.errors)))
    else:
        daily = budgets.daily_budget(actor)
        if daily is not None:
            left = max(0.0, daily - budgets.spent_today(actor))
            checks.append(LaunchCheck("daily budget", True, f"within it: {budget_rules.usd(left)} left today"))
    return checks


def batch_launch(
    *,
    batch_spec: spec.BatchSpec,
    base_dir: Path,
    owner=None,
    spec_data: Mapping | None = None,
    spec_text: str | None = None,
    mode: str | None = None,
    sequential_of: Batch | None = None,
    confine: bool = False,
    checked: tuple[Path, dict[str, Path]] | None = None,
    template=None,
) -> Batch:
    """Store the batch and its runs, and start what is ready, in one transaction.

    The spec's data and text default to what `spec_load` read; `checked` is what
    `batch_check` returned for this spec and base_dir, when the caller checked already.
    """
    batch_cwd, task_cwds = checked or batch_check(batch_spec, base_dir, confine=confine)
    launch_budget_check(batch_spec, owner)
    if spec_data is None:
        spec_data = batch_spec.data
    if spec_text is None:
        spec_text = batch_spec.text
    mode = mode or batch_spec.mode
    plan = batch_plan(batch_spec, sequential=mode == Mode.SEQUENTIAL)
    order = {key: i for i, key in enumerate(plan.order)}
    wave_of = {key: n for n, wave in enumerate(plan.waves) for key in wave}
    types = {t.name: t for t in AgentType.objects.filter(name__in={t.agent for t in batch_spec.tasks})}
    ws = batch_spec.workspace if batch_spec.workspace and batch_spec.workspace.isolated else None
    cp = workspaces.checkpoint(ws, batch_cwd, confine_to=base_dir if confine else None) if ws else None
    with transaction.atomic():
        batch = Batch.objects.create(
            name=batch_spec.name,
            owner=owner if owner is not None and owner.is_authenticated else None,
            spec=dict(spec_data) if spec_data is not None else {},
            spec_text=spec_text,
            mode=mode,
            max_parallel=batch_spec.max_parallel,
            failure_policy=batch_spec.failure_policy,
            backoff_seconds=batch_spec.backoff,
            aggregation=batch_spec.aggregation,
            webhook_url=batch_spec.webhook,
            webhook_format=batch_spec.webhook_format,
            cwd=str(batch_cwd),
            sequential_of=sequential_of,
            budget_usd=batch_spec.budget_usd,
            on_budget=batch_spec.on_budget,
            template=template,
        )
        AgentRun.objects.bulk_create(
            AgentRun(
                batch=batch,
                key=t.key,
                agent_type=types[t.agent],
                role=t.role,
                prompt=t.prompt,
                priority=t.priority,
                depends_on=list(t.depends_on),
                files=list(t.files),
                timeout=t.timeout,
                retries=t.retries,
                cwd=str(task_cwds[t.key]),
                order=order[t.key],
                wave=wave_of[t.key],
                budget_usd=t.budget_usd,
                estimate_usd=t.estimate_usd,
            )
            for t in batch_spec.tasks
        )
        if ws and cp:
            workspaces.record(batch, ws, cp)
        events.record(
            batch_id=batch.id,
            kind=EventKind.BATCH_LAUNCHED,
            status=BatchStatus.RUNNING,
            data={"tasks": len(batch_spec.tasks), "mode": mode, "max_parallel": batch.max_parallel},
            actor=owner,
        )
        dispatch.batch_advance(batch.id)
    return batch


# --- cost: budgets at launch ------------------------------------------------------------


def launch_budget_check(batch_spec: spec.BatchSpec, owner) -> None:
    """Refuse a launch that would take its owner past their daily budget (set by an admin)."""
    daily = budgets.daily_budget(owner)
    if daily is None:
        return
    estimate = budgets.plan_cost(batch_spec.tasks)["estimate_usd"]
    spent = budgets.spent_today(owner)
    if refusal := budget_rules.daily_refusal(daily_usd=daily, spent_today=spent, estimate=estimate):
        raise spec.SpecInvalid([spec.FieldError("batch", "budget", f"launch refused: {refusal}")])


def _refuse_admin_only(runs, actor) -> None:
    """Running an admin-only agent type again needs an admin, as launching it did; so does running
    a workspace's setup or gate command again (a command the server runs)."""
    runs = list(runs)
    if why := permissions.admin_only_refusal(actor, runs):
        raise NotAllowed(why)
    if actor is None or permissions.may_run_admin_only(actor):
        return
    commands = Workspace.objects.filter(batch_id__in={r.batch_id for r in runs}).exclude(setup="", gate="")
    if commands.exists():
        raise NotAllowed("only an admin may run again a batch whose workspace has setup or gate commands")


def _reopen_skipped_dependents(run: AgentRun, *, actor) -> None:
    """Runs skipped because this one failed get their chance again (and say so in the log)."""
    runs = list(AgentRun.objects.filter(batch_id=run.batch_id).only("id", "key", "status", "depends_on"))
    before = planning.ancestors({r.key: tuple(r.depends_on) for r in runs})
    below = {r.key for r in runs if run.key in before[r.key]}
    for other in runs:
        if other.key in below and other.status == RunStatus.SKIPPED:
            transitions.run_reopen(other, because=f"'{run.key}' is retried", actor=actor)


def batch_rerun_sequential(*, batch: Batch, actor=None) -> Batch:
    """Run the same spec again, one task at a time, to compare against the parallel run."""
    permissions.require(actor, permissions.may_launch)
    if not batch.spec_text:
        raise ActionRefused("this batch has no stored spec to re-run")
    _refuse_admin_only(batch.runs.select_related("agent_type"), actor)
    # Same directory as the original: its cwd is already resolved.
    # Read as the person re-running it: what only an admin may set (a webhook) needs an admin again.
    is_admin = actor is None or permissions.may_run_admin_only(actor)
    batch_spec = dataclasses.replace(spec_load(batch.spec_text, is_admin=is_admin), cwd="")
    return batch_launch(
        batch_spec=batch_spec,
        base_dir=Path(batch.cwd),
        owner=actor,
        spec_data=batch.spec,
        spec_text=batch.spec_text,
        mode=Mode.SEQUENTIAL,
        sequential_of=batch,
    )


def batch_cancel(*, batch: Batch, actor=None) -> None:
    permissions.require(actor, permissions.may_cancel, batch)
    with transaction.atomic():
        updated = Batch.objects.filter(id=batch.id, status=BatchStatus.RUNNING, cancel_requested=False).update(
            cancel_requested=True
        )
        if not updated:
            raise ActionRefused(f"batch #{batch.id} is not running")
        events.record(batch_id=batch.id, kind=EventKind.BATCH_CANCEL_REQUESTED, actor=actor)
        dispatch.batch_advance(batch.id, actor=actor)


def run_cancel(*, run: AgentRun, actor=None) -> None:
    permissions.require(actor, permissions.may_cancel, run.batch)
    with transaction.atomic():
        Batch.objects.select_for_update(no_key=True).get(id=run.batch_id)
        run = AgentRun.objects.get(id=run.id)
        if run.status in RUN_TERMINAL:
            raise ActionRefused(f"run '{run.key}' has already ended ({run.status})")
        transitions.run_cancel(run, error="cancelled by a user", actor=actor)
        dispatch.batch_advance(run.batch_id)


def run_retry(*, run: AgentRun, actor=None) -> None:
    """A new attempt for a run that ended without success; reopens its batch if it had ended."""
    permissions.require(actor, permissions.may_launch)
    with transaction.atomic():
        batch = Batch.objects.select_for_update(no_key=True).get(id=run.batch_id)
        run = AgentRun.objects.get(id=run.id)
        _refuse_admin_only([run], actor)
        if run.status not in RUN_TERMINAL or run.status == RunStatus.SUCCEEDED:
            raise ActionRefused(f"run '{run.key}' is {run.status}; only ended, unsuccessful runs retry")
        waiting = [
            d
            for d in run.depends_on
            if not AgentRun.objects.filter(batch_id=batch.id, key=d, status=RunStatus.SUCCEEDED).exists()
        ]
        if waiting:
            raise ActionRefused(f"run '{run.key}' depends on {', '.join(waiting)}, which did not succeed")
        if batch.aggregation == Strategy.FIRST_SUCCESS and batch.runs.filter(status=RunStatus.SUCCEEDED).exists():
            raise ActionRefused("this race already has a winner")
        if batch.status != BatchStatus.RUNNING:
            transitions.batch_reopen(batch, actor=actor)
        if batch.failure_policy == FailurePolicy.FAIL_FAST:
            # A person took over: the earlier failures must not cancel what they retry.
            Batch.objects.filter(id=batch.id).update(failure_policy=FailurePolicy.CONTINUE)
            events.record(
                batch_id=batch.id,
                kind=EventKind.BATCH_POLICY_CHANGED,
                actor=actor,
                data={"failure_policy": FailurePolicy.CONTINUE, "was": FailurePolicy.FAIL_FAST, "why": "manual retry"},
            )
        _reopen_skipped_dependents(run, actor=actor)
        transitions.attempt_queue(run, not_before=timezone.now(), reason=EventKind.RUN_RETRIED, actor=actor)
        dispatch.batch_advance(batch.id)


def batch_retry_failed(*, batch: Batch, actor=None) -> tuple[list[str], list[str]]:
    """Retry every failed run of a batch: (keys retried, why others were not). All or nothing on permissions."""
    permissions.require(actor, permissions.may_launch)
    failed = list(batch.runs.filter(status__in=RUN_FAILED).select_related("agent_type").order_by("order"))
    _refuse_admin_only(failed, actor)
    if not failed:
        raise ActionRefused("no run of this batch has failed")
    retried, refused = [], []
    for run in failed:
        try:
            run_retry(run=run, actor=actor)
            retried.append(run.key)
        except NotAllowed:
            raise
        except ActionRefused as exc:
            refused.append(str(exc))
    if not retried:
        raise ActionRefused("; ".join(refused))
    return retried, refused


# --- escalations and reviews ------------------------------------------------------------------


def escalation_assign(*, escalation: Escalation, assignee, actor) -> None:
    permissions.require(actor, permissions.may_resolve_escalations)
    with transaction.atomic():
        if not transitions.escalation_assign(escalation, assignee=assignee, actor=actor):
            raise ActionRefused(f"escalation #{escalation.id} is no longer open")


_RESOLUTIONS = {
    "accept": (Escalation.State.RESOLVED, Escalation.Resolution.ACCEPTED),
    "dismiss": (Escalation.State.DISMISSED, Escalation.Resolution.DISMISSED),
    "retry": (Escalation.State.RESOLVED, Escalation.Resolution.RETRIED),
}


def escalation_resolve(*, escalation: Escalation, action: str, note: str = "", actor) -> None:
    """retry (the run gets a new attempt), accept (the partial result stands) or dismiss (with a reason)."""
    permissions.require(actor, permissions.may_resolve_escalations)
    if action not in _RESOLUTIONS:
        raise ActionRefused(f"unknown action {action!r}: retry, accept or dismiss")
    if action == "dismiss" and not note.strip():
        raise ActionRefused("say why you dismiss it")
    if action == "retry" and escalation.run is None:
        raise ActionRefused("this escalation concerns the whole batch: retry its runs one by one")
    if escalation.kind in _MERGE_ESCALATIONS and escalation.run is not None and action != "dismiss":
        raise ActionRefused(
            "a merge escalation is resolved in the merge queue: keep one side per file, re-run on top of the "
            "integration branch, resolve by hand, merge again or skip"
        )
    state, resolution = _RESOLUTIONS[action]
    with transaction.atomic():
        if action == "retry":
            run_retry(run=escalation.run, actor=actor)
        if not transitions.escalation_close(escalation, state=state, resolution=resolution, note=note, actor=actor):
            raise ActionRefused(f"escalation #{escalation.id} is no longer open")


def review_submit(*, batch: Batch, author, decision: str, comment: str = "") -> Review:
    permissions.require(author, permissions.may_review)
    if decision not in Review.Decision.values:
        raise ActionRefused(f"unknown decision {decision!r}")
    if decision == Review.Decision.REQUEST_CHANGES and not comment.strip():
        raise ActionRefused("say what should change")
    with transaction.atomic():
        review = Review.objects.create(batch=batch, author=author, decision=decision, comment=comment)
        events.record(
            batch_id=batch.id, kind=EventKind.of("review", decision), data={"review": review.id}, actor=author
        )
    return review


# --- the merge queue --------------------------------------------------------------------------
# Every action needs the permission to resolve escalations (a re-run also the one to launch). The
# state changes go through transitions; git work runs in the merge queue's q2 task, except what a
# person waits for (putting a conflict in a worktree, committing a resolution, a revert, a reset).

_MERGE_ESCALATIONS = (Escalation.Kind.CONFLICT, Escalation.Kind.MERGE_GATE)


def _merge_workspace(step: MergeStep):
    ws = merging.of(step.batch_id)
    if ws is None:
        raise ActionRefused(f"batch #{step.batch_id} has no merge queue")
    return ws


def _fresh_step(step: MergeStep) -> MergeStep:
    return MergeStep.objects.select_related("run", "batch").get(id=step.id)


def _refuse_state(step: MergeStep, action: str) -> None:
    if action not in merge_rules.actions_for(step.state):
        allowed = ", ".join(merge_rules.actions_for(step.state)) or "nothing until it changes"
        raise ActionRefused(f"run '{step.run.key}' is {step.state} in the merge queue; you may: {allowed}")


def _close_merge_escalations(step: MergeStep, *, state: str, resolution: str, note: str, actor) -> None:
    for escalation in Escalation.objects.filter(run_id=step.run_id, kind__in=_MERGE_ESCALATIONS, state="open"):
        transitions.escalation_close(escalation, state=state, resolution=resolution, note=note, actor=actor)


def _step_move(step: MergeStep, name: str, target: str, *, actor, **fields) -> None:
    if not transitions.merge_step_move(step, name, target, actor=actor, **fields):
        raise ActionRefused(f"run '{step.run.key}' changed state in the merge queue meanwhile; look again")


def merge_step_merge(*, step: MergeStep, actor=None) -> None:
    """Put a step (waiting in manual mode, skipped, reverted, or after a failed gate) in the queue."""
    permissions.require(actor, permissions.may_resolve_escalations)
    step = _fresh_step(step)
    _merge_workspace(step)
    _refuse_state(step, "merge")
    with transaction.atomic():
        was = step.state
        _step_move(step, "merge_step_queued", MergeStep.State.QUEUED, actor=actor, error="", data={"was": was})
        if was == MergeStep.State.GATE_FAILED:
            note = "merged again after the gate failed"
            _close_merge_escalations(
                step, state=Escalation.State.RESOLVED, resolution=Escalation.Resolution.RETRIED, note=note, actor=actor
            )
        merging.send_on_commit(step.batch_id)


def merge_step_skip(*, step: MergeStep, note: str = "", actor=None) -> None:
    """Leave a run out of the integration branch; its merge escalation is dismissed."""
    permissions.require(actor, permissions.may_resolve_escalations)
    step = _fresh_step(step)
    _merge_workspace(step)
    _refuse_state(step, "skip")
    with transaction.atomic():
        _step_move(step, "merge_step_skipped", MergeStep.State.SKIPPED, actor=actor, data={"note": note})
        _close_merge_escalations(
            step,
            state=Escalation.State.DISMISSED,
            resolution=Escalation.Resolution.DISMISSED,
            note=note or "skipped in the merge queue",
            actor=actor,
        )


def merge_step_keep_sides(*, step: MergeStep, sides: Mapping[str, str], actor=None) -> None:
    """Resolve a conflict by keeping, per conflicting file, `ours` (the integration branch) or
    `theirs` (the run); the merge commit is made with those choices by the queue."""
    permissions.require(actor, permissions.may_resolve_escalations)
    step = _fresh_step(step)
    _merge_workspace(step)
    _refuse_state(step, "keep_sides")
    sides = {str(k): str(v) for k, v in dict(sides).items()}
    if errors := merge_rules.side_choice_errors((step.conflict or {}).get("files", []), sides):
        raise ActionRefused("; ".join(errors))
    chosen = ", ".join(f"{f}: {s}" for f, s in sorted(sides.items()))
    with transaction.atomic():
        _step_move(
            step,
            "merge_step_queued",
            MergeStep.State.QUEUED,
            actor=actor,
            resolution={"sides": sides},
            data={"resolution": "sides", "sides": sides},
        )
        _close_merge_escalations(
            step,
            state=Escalation.State.RESOLVED,
            resolution=Escalation.Resolution.SIDES,
            note=f"kept {chosen}",
            actor=actor,
        )
        merging.send_on_commit(step.batch_id)


def merge_step_rerun(*, step: MergeStep, actor=None) -> RunAttempt:
    """Run the agent again on top of the integration branch, the conflict (files and hunks) added to
    its prompt; when it succeeds its step is merged again."""
    permissions.require(actor, permissions.may_resolve_escalations)
    permissions.require(actor, permissions.may_launch)
    step = _fresh_step(step)
    ws = _merge_workspace(step)
    _refuse_state(step, "rerun")
    _refuse_admin_only([AgentRun.objects.select_related("agent_type").get(id=step.run_id)], actor)
    head = ws.integration_head or ws.checkpoint
    note = merge_rules.rerun_note(
        integration=changes_rules.integration_branch(step.batch_id), conflict=step.conflict or {}
    )
    with transaction.atomic():
        batch = Batch.objects.select_for_update(no_key=True).get(id=step.batch_id)
        run = AgentRun.objects.get(id=step.run_id)
        if run.status != RunStatus.SUCCEEDED:
            raise ActionRefused(f"run '{run.key}' is {run.status}; only a succeeded run re-runs on top")
        _step_move(
            step,
            "merge_step_rerunning",
            MergeStep.State.RERUNNING,
            actor=actor,
            rerun_attempt=run.attempt + 1,
            data={"integration_head": head},
        )
        if batch.status != BatchStatus.RUNNING:
            transitions.batch_reopen(batch, actor=actor)
        attempt = transitions.attempt_queue(
            run,
            not_before=timezone.now(),
            reason=EventKind.RUN_RETRIED,
            actor=actor,
            transition="run_rerun_on_top",
            start_commit=head,
            prompt_note=note,
        )
        if attempt is None:
            raise ActionRefused(f"run '{run.key}' changed meanwhile; look again")
        _close_merge_escalations(
            step,
            state=Escalation.State.RESOLVED,
            resolution=Escalation.Resolution.RETRIED,
            note="re-run on top of the integration branch",
            actor=actor,
        )
        dispatch.batch_advance(batch.id)
    return attempt


def merge_step_by_hand(*, step: MergeStep, actor=None) -> dict:
    """Put the conflict in the run's worktree (the integration branch merged in, markers left) for a
    person to edit; then `merge_step_resolved`. Returns {"worktree": path, "files": [...]}."""
    permissions.require(actor, permissions.may_resolve_escalations)
    step = _fresh_step(step)
    ws = _merge_workspace(step)
    _refuse_state(step, "by_hand")
    path, files = _git_action(merging.by_hand, ws, step)
    with transaction.atomic():
        _step_move(
            step,
            "merge_step_resolving",
            MergeStep.State.RESOLVING,
            actor=actor,
            resolution={"by_hand": str(path), "files": files},
            data={"worktree": str(path), "files": files},
        )
    return {"worktree": str(path), "files": files}


def merge_step_resolved(*, step: MergeStep, note: str = "", actor=None) -> str:
    """A person resolved the conflict in the run's worktree: Spawner commits it there and the queue
    merges it. Refused while conflict markers remain. Returns the commit."""
    permissions.require(actor, permissions.may_resolve_escalations)
    step = _fresh_step(step)
    ws = _merge_workspace(step)
    _refuse_state(step, "resolved")
    who = actor.get_username() if actor is not None and actor.is_authenticated else "the command line"
    commit = _git_action(merging.mark_resolved, ws, step, who=who)
    with transaction.atomic():
        _step_move(
            step,
            "merge_step_queued",
            MergeStep.State.QUEUED,
            actor=actor,
            resolution={**(step.resolution or {}), "resolved": commit},
            data={"resolution": "by_hand", "commit": commit},
        )
        _close_merge_escalations(
            step,
            state=Escalation.State.RESOLVED,
            resolution=Escalation.Resolution.BY_HAND,
            note=note or f"resolved by hand ({commit[:10]})",
            actor=actor,
        )
        merging.send_on_commit(step.batch_id)
    return commit


def _git_action(action, *args, **kwargs):
    """A person's action on the repository: what git or the queue refuses comes back as a refusal."""
    try:
        return action(*args, **kwargs)
    except (merging.MergeError, merging.Busy) as exc:
        raise ActionRefused(str(exc)) from None
    except git.GitError as exc:
        raise ActionRefused(f"git: {exc}") from None


def merge_step_revert(*, step: MergeStep, actor=None) -> str:
    """Revert one run's merge on the integration branch (`git revert -m 1`). Returns the revert commit."""
    permissions.require(actor, permissions.may_resolve_escalations)
    step = _fresh_step(step)
    ws = _merge_workspace(step)
    _refuse_state(step, "revert")
    commit = _git_action(merging.revert, ws, step)
    with transaction.atomic():
        _step_move(
            step,
            "merge_step_reverted",
            MergeStep.State.REVERTED,
            actor=actor,
            revert_commit=commit,
            data={"commit": commit},
        )
    return commit


def merge_reset(*, batch: Batch, actor=None) -> None:
    """The integration branch back to the checkpoint: merged steps (and those waiting on a conflict or a
    failed gate) become reverted, to be picked again; their merge escalations are closed."""
    permissions.require(actor, permissions.may_resolve_escalations)
    ws = merging.of(batch.id)
    if ws is None:
        raise ActionRefused(f"batch #{batch.id} has no merge queue")
    head = _git_action(merging.reset, ws)
    with transaction.atomic():
        steps = MergeStep.objects.filter(batch_id=batch.id, state__in=list(merge_rules.AFTER_RESET)).select_related(
            "run"
        )
        for step in steps:
            transitions.merge_step_move(
                step, "merge_step_reverted", MergeStep.State.REVERTED, actor=actor, data={"reset": True}
            )
            _close_merge_escalations(
                step,
                state=Escalation.State.DISMISSED,
                resolution=Escalation.Resolution.SUPERSEDED,
                note="the integration branch was reset",
                actor=actor,
            )
        events.record(batch_id=batch.id, kind=EventKind.MERGE_RESET, data={"head": head}, actor=actor)


def merge_pick_winner(*, batch: Batch, run: AgentRun, actor=None) -> list[str]:
    """Best of N: a person picks the candidate to keep. Its step is merged (a succeeded run with no step
    yet, say a race's loser that also finished, enters the queue); every other step that may be skipped
    is skipped. When another candidate is already on the integration branch, the branch is reset to
    the checkpoint first. Returns what was done, one line each."""
    permissions.require(actor, permissions.may_resolve_escalations)
    if merging.of(batch.id) is None:
        raise ActionRefused(f"batch #{batch.id} has no merge queue")
    run = AgentRun.objects.get(id=run.id)
    if run.batch_id != batch.id:
        raise ActionRefused(f"run '{run.key}' is not in batch #{batch.id}")
    if run.status != RunStatus.SUCCEEDED:
        raise ActionRefused(f"run '{run.key}' is {run.status}; only a succeeded run can be picked")
    steps = list(MergeStep.objects.filter(batch_id=batch.id).select_related("run"))
    mine = next((s for s in steps if s.run_id == run.id), None)
    if mine is not None and mine.state in (MergeStep.State.RESOLVING, MergeStep.State.RERUNNING):
        raise ActionRefused(f"run '{run.key}' is {mine.state} in the merge queue; wait for it or skip it first")
    done: list[str] = []
    others_in = [s for s in steps if s.run_id != run.id and s.state in merge_rules.AFTER_RESET]
    if others_in:
        merge_reset(batch=batch, actor=actor)
        done.append("reset the integration branch to the checkpoint")
    with transaction.atomic():
        if mine is None:
            position = max((s.position for s in steps), default=-1) + 1
            mine = transitions.merge_step_create(batch=batch, run=run, position=position, state=MergeStep.State.WAITING)
            if mine is None:
                raise ActionRefused(f"run '{run.key}' changed in the merge queue meanwhile; look again")
            done.append(f"put '{run.key}' in the merge queue")
        for step in MergeStep.objects.filter(batch_id=batch.id).exclude(run_id=run.id).select_related("run"):
            if "skip" in merge_rules.actions_for(step.state):
                merge_step_skip(step=step, note=f"'{run.key}' was picked instead", actor=actor)
                done.append(f"skipped '{step.run.key}'")
        mine = _fresh_step(mine)
        if "merge" in merge_rules.actions_for(mine.state):
            merge_step_merge(step=mine, actor=actor)
            done.append(f"queued '{run.key}' to merge")
        elif mine.state in (MergeStep.State.QUEUED, MergeStep.State.MERGED):
            done.append(f"'{run.key}' is {mine.state}")
        else:
            raise ActionRefused(f"run '{run.key}' is {mine.state} in the merge queue; resolve it there")
    return done


# --- the REST API: personal tokens and idempotent launches -------------------------------------

TOKEN_PREFIX = "spn_"
TOKEN_SHOWN_CHARS = 12  # what the tokens page shows of a secret: "spn_" and 8 more
TOKEN_NAME_CHARS = 100
IDEMPOTENCY_KEY_CHARS = 200


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", errors="surrogatepass")).hexdigest()


def token_create(*, user, name: str, scope: str, expires_at=None):
    """A new personal API token: (the stored row, the secret, shown this once and never stored)."""
    if user is None or not user.is_authenticated or not user.is_active:
        raise NotAllowed("sign in to create an API token")
    name = (name or "").strip()
    if not name:
        raise ActionRefused("name: give the token a name, to recognise it later")
    if len(name) > TOKEN_NAME_CHARS:
        raise ActionRefused(f"name: at most {TOKEN_NAME_CHARS} characters")
    if scope not in ApiToken.Scope.values:
        raise ActionRefused(f"scope: one of {', '.join(ApiToken.Scope.values)}")
    if scope == ApiToken.Scope.ADMIN:
        permissions.require(user, permissions.may_run_admin_only)
    if expires_at is not None and expires_at <= timezone.now():
        raise ActionRefused("expires: the date has passed")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)  # 32 random bytes
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=secret[:TOKEN_SHOWN_CHARS],
        digest=token_digest(secret),
        scope=scope,
        expires_at=expires_at,
    )
    return token, secret


def token_revoke(*, token_id: int, user) -> None:
    """Revoke one of one's own tokens (someone else's is not found)."""
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().filter(id=token_id, user_id=getattr(user, "id", None)).first()
        if token is None:
            raise ActionRefused(f"you have no token #{token_id}")
        if token.revoked_at is not None:
            raise ActionRefused(f"token {token.prefix}… is already revoked")
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])


TOKEN_TOUCH_SECONDS = 60  # "last used" is written at most this often


def token_user(secret: str):
    """(the user, the token) a presented secret stands for, or None: unknown, revoked, expired, or
    its person no longer active. Records when it was last used."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    token = ApiToken.objects.select_related("user").filter(digest=token_digest(secret)).first()
    now = timezone.now()
    if token is None or token.revoked_at is not None or (token.expires_at and token.expires_at <= now):
        return None
    if not token.user.is_active:
        return None
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > TOKEN_TOUCH_SECONDS:
        ApiToken.objects.filter(id=token.id).update(last_used_at=now)
        token.last_used_at = now
    return token.user, token


class IdempotencyConflict(ActionRefused):
    """An Idempotency-Key used again for a different request."""


def batch_launch_once(*, owner, key: str, body: bytes, launch) -> tuple[Batch, bool]:
    """Launch (calling `launch()`) unless this person already launched with this Idempotency-Key:
    (the batch, whether it is the one launched earlier). The same key with another body is refused."""
    if not key or len(key) > IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise ActionRefused(f"Idempotency-Key: 1 to {IDEMPOTENCY_KEY_CHARS} printable characters")
    digest = token_digest(body.decode("utf-8", errors="replace"))

    def earlier() -> tuple[Batch, bool] | None:
        found = IdempotencyKey.objects.select_related("batch").filter(user=owner, key=key).first()
        if found is None:
            return None
        if found.request_digest != digest:
            raise IdempotencyConflict(f"Idempotency-Key {key!r} was used for another request (batch #{found.batch_id})")
        return found.batch, True

    if (done := earlier()) is not None:
        return done
    try:
        with transaction.atomic():
            batch = launch()
            IdempotencyKey.objects.create(user=owner, key=key, request_digest=digest, batch=batch)
    except IntegrityError:
        # The same request, sent twice at once: the other one launched; this one's launch is undone.
        if (done := earlier()) is not None:
            return done
        raise
    return batch, False


# --- saved and scheduled batches: templates with ${name} variables, launched by hand or on a cron ---

TEMPLATE_SCHEDULED_FUNC = "spawner.templates.scheduled_launch"


class TemplateInvalid(spec.SpecInvalid):
    """A template, its variables or the values given to it: each error names its field."""


class TemplateNameTaken(TemplateInvalid):
    """Another template of the same owner (or global) has this name."""


def _template_error(exc) -> TemplateInvalid:
    return TemplateInvalid([spec.FieldError("template", exc.field, exc.message)])


def may_edit_template(user, template) -> bool:
    """A person's own templates; global ones (and anyone's) for an admin."""
    if not permissions.may_launch(user):
        return False
    return permissions.may_run_admin_only(user) or (template.owner_id is not None and template.owner_id == user.id)


def template_render(*, spec_text: str, declared: Mapping, given: Mapping) -> str:
    """The spec text a launch runs: the template's document with its variables filled in its text
    values only (spawner.core.template_vars), written again as YAML."""
    import yaml

    from spawner.core import template_vars
    from spawner.spec.reading import parse_text

    data, _ = parse_text(spec_text)
    try:
        template_vars.names_used(data)
        values = template_vars.resolve(declared, given)
        filled = template_vars.fill(data, values)
    except template_vars.TemplateError as exc:
        raise _template_error(exc) from None
    return yaml.safe_dump(filled, sort_keys=False, allow_unicode=True, width=120)


def _with_template_lines(exc: spec.SpecInvalid, spec_text: str) -> spec.SpecInvalid:
    """Errors of the rendered spec, at the template's own lines (its fields and tasks are the same)."""
    from spawner.spec.reading import parse_text

    try:
        _, lines = parse_text(spec_text)
    except spec.SpecInvalid:
        return exc
    fixed = []
    for e in exc.errors:
        key = (e.index, e.field) if e.index is not None else ("batch", e.field)
        line = lines.get(key, lines.get(e.index) if e.index is not None else None)
        fixed.append(dataclasses.replace(e, line=line))
    return spec.SpecInvalid(fixed)


def template_check(*, name: str, spec_text: str, variables_text: str, actor) -> dict:
    """Validate what a template is saved with: its name, its variables, and its spec once filled
    with the defaults (a required variable with a stand-in); returns the declared variables."""
    from spawner.core import template_vars

    errors = []
    if not name or len(name) > 100 or not all(c.isalnum() or c in "-_" for c in name) or not name.isascii():
        errors.append(spec.FieldError("template", "name", "letters, digits, - and _ (at most 100)"))
    try:
        declared = template_vars.parse_declarations(variables_text)
    except template_vars.TemplateError as exc:
        raise TemplateInvalid([*errors, *_template_error(exc).errors]) from None
    from spawner.spec.reading import parse_text

    data, _ = parse_text(spec_text)
    try:
        used = template_vars.names_used(data)
    except template_vars.TemplateError as exc:
        raise TemplateInvalid([*errors, *_template_error(exc).errors]) from None
    undeclared = sorted(used - set(declared))
    if undeclared:
        errors.append(
            spec.FieldError(
                "template", "variables", f"declare {', '.join(undeclared)} (name=default, one a line), or write $${{"
            )
        )
    if errors:
        raise TemplateInvalid(errors)
    sample = {n: (d if d is not None else "x") for n, d in declared.items()}
    rendered = template_render(spec_text=spec_text, declared=declared, given=sample)
    is_admin = actor is None or permissions.may_run_admin_only(actor)
    try:
        spec_load(rendered, is_admin=is_admin)
    except spec.SpecInvalid as exc:
        raise _with_template_lines(exc, spec_text) from None
    return declared


def template_declarations(variables: Mapping[str, str | None]) -> str:
    """Variables given as {name: default or None} (the API) as the declarations text the pages send;
    a name or default that would not survive that text (a newline, `=`, spaces around) is refused."""
    from spawner.core import template_vars

    for name, default in variables.items():
        if "\n" in name or "=" in name or (default is not None and ("\n" in default or default != default.strip())):
            raise TemplateInvalid(
                [
                    spec.FieldError(
                        "template", "variables", f"{name!r}: a name and a default on one line, without spaces around"
                    )
                ]
            )
    return template_vars.declarations_text(variables)


def template_save(
    *,
    actor,
    name: str,
    spec_text: str,
    variables_text: str = "",
    description: str = "",
    shared: bool = False,
    template=None,
):
    """Save a new template (or change `template`): the actor's own, or global (`shared`, admins)."""
    from spawner.models import BatchTemplate

    permissions.require(actor, permissions.may_launch)
    if template is not None and actor is not None and not may_edit_template(actor, template):
        raise NotAllowed("only its owner or an admin may change this template")
    if shared and actor is not None and not permissions.may_run_admin_only(actor):
        raise NotAllowed("only an admin may save a template for everyone")
    declared = template_check(name=name, spec_text=spec_text, variables_text=variables_text, actor=actor)
    owner = None if shared or actor is None else actor
    if template is None:
        template = BatchTemplate(owner=owner)
    template.name, template.spec_text, template.variables = name, spec_text, declared
    template.description = description[:300]
    clash = BatchTemplate.objects.filter(name=name, owner=template.owner).exclude(id=template.id)
    if clash.exists():
        taken = f"{'you already have' if template.owner else 'there is already'} a template named {name!r}"
        raise TemplateNameTaken([spec.FieldError("template", "name", taken)])
    try:
        with transaction.atomic():
            template.save()
    except IntegrityError:
        raise TemplateNameTaken([spec.FieldError("template", "name", f"a template named {name!r} exists")]) from None
    return template


def template_delete(*, template, actor) -> None:
    if actor is not None and not may_edit_template(actor, template):
        raise NotAllowed("only its owner or an admin may delete this template")
    from django_q.models import Schedule

    Schedule.objects.filter(id__in=template.schedules.values("schedule_id")).delete()
    template.delete()


def template_launch(
    *,
    template,
    values: Mapping,
    actor,
    base_dir: Path | None = None,
    confine: bool = True,
    confirm_cost: bool = False,
) -> Batch:
    """Fill the template's variables and launch it through `batch_launch`, as `actor`: the same
    permission checks as any launch, and the same cost confirmation as launching its spec (the
    person says yes with `confirm_cost`). The batch is linked to its template."""
    permissions.require(actor, permissions.may_launch)
    text = template_render(spec_text=template.spec_text, declared=template.variables, given=values)
    is_admin = actor is None or permissions.may_run_admin_only(actor)
    try:
        batch_spec = spec_load(text, is_admin=is_admin)
    except spec.SpecInvalid as exc:
        raise _with_template_lines(exc, template.spec_text) from None
    if not confirm_cost:
        from spawner import selectors

        cost = selectors.plan_cost(batch_spec)
        if cost["needs_confirm"]:
            raise CostUnconfirmed(f"{cost['confirm_reason']}: confirm the cost to launch it", cost)
    return batch_launch(
        batch_spec=batch_spec,
        base_dir=Path(base_dir or settings.SPAWNER_WORKDIR),
        owner=actor,
        confine=confine,
        template=template,
    )


def _cron_next(cron: str, tz: str):
    from zoneinfo import ZoneInfo

    from croniter import croniter

    return croniter(cron, timezone.now().astimezone(ZoneInfo(tz))).get_next(type(timezone.now()))


def schedule_check(cron: str, tz: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from croniter import croniter

    errors = []
    if not cron or len(cron) > 100 or not croniter.is_valid(cron):
        errors.append(spec.FieldError("schedule", "cron", f"{cron!r} is not a cron expression (e.g. 0 3 * * 1-5)"))
    try:
        if not tz or len(tz) > 64:
            raise ZoneInfoNotFoundError(tz)
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        errors.append(spec.FieldError("schedule", "timezone", f"{tz!r} is not a time zone (e.g. Europe/Paris, UTC)"))
    if errors:
        raise TemplateInvalid(errors)


def schedule_create(*, template, cron: str, tz: str = "UTC", values: Mapping | None = None, actor):
    """Launch `template` on a cron expression in a time zone, as `actor` (its owner or an admin),
    through a django-q2 Schedule (type CRON) whose next run is computed in that time zone."""
    from django_q.models import Schedule

    from spawner.models import TemplateSchedule

    if actor is None or not may_edit_template(actor, template):
        raise NotAllowed("only its owner or an admin (with the permission to launch) may schedule this template")
    cron = " ".join(cron.split())
    schedule_check(cron, tz)
    values = dict(values or {})
    template_render(spec_text=template.spec_text, declared=template.variables, given=values)  # the values fit
    with transaction.atomic():
        q2 = Schedule.objects.create(
            name=f"template {template.id} {secrets.token_hex(4)}",
            func=TEMPLATE_SCHEDULED_FUNC,
            schedule_type=Schedule.CRON,
            cron=cron,
            repeats=-1,
        )
        link = TemplateSchedule.objects.create(
            template=template, schedule=q2, run_as=actor, cron=cron, timezone=tz, variables=values
        )
        Schedule.objects.filter(id=q2.id).update(args=repr((link.id,)), next_run=_cron_next(cron, tz))
    return link


def schedule_set_paused(*, link, paused: bool, actor) -> None:
    from django_q.models import Schedule

    if actor is None or not may_edit_template(actor, link.template):
        raise NotAllowed("only its owner or an admin may pause or resume this schedule")
    fields = {"repeats": 0} if paused else {"repeats": -1, "next_run": _cron_next(link.cron, link.timezone)}
    Schedule.objects.filter(id=link.schedule_id).update(**fields)


def schedule_delete(*, link, actor) -> None:
    if actor is None or not may_edit_template(actor, link.template):
        raise NotAllowed("only its owner or an admin may delete this schedule")
    link.schedule.delete()  # the link goes with it


def schedule_fire(link_id: int) -> Batch | None:
    """What a schedule's task does: launch its template as the person who scheduled it, with the
    same checks as their own launch; then set the next run in the schedule's time zone."""
    from django_q.models import Schedule

    from spawner.models import TemplateSchedule

    link = TemplateSchedule.objects.select_related("template", "run_as").filter(id=link_id).first()
    if link is None:
        return None
    try:
        # Nobody is there to say yes at 3 a.m.: an unattended launch is held by budgets (the batch's
        # budget_usd, its maker's daily budget), not by the confirmation an interactive launch asks for.
        return template_launch(template=link.template, values=link.variables, actor=link.run_as, confirm_cost=True)
    finally:
        Schedule.objects.filter(id=link.schedule_id).exclude(repeats=0).update(
            next_run=_cron_next(link.cron, link.timezone)
        )


# --- webhooks ----------------------------------------------------------------------------------


def personal_webhook_set(*, user, url: str, fmt: str = "json"):
    """Set a person's own notification webhook (an escalation assigned to them, a review requested of
    them are sent there), or
    remove it with an empty URL. The same rules as a batch's webhook: http(s), a public address
    unless the host is in SPAWNER_WEBHOOK_ALLOW_HOSTS (checked again after the lookup when sent)."""
    from spawner.models import PersonalWebhook

    url = url.strip()
    if not url:
        PersonalWebhook.objects.filter(user_id=user.id).delete()
        return None
    if len(url) > spec.MAX_WEBHOOK_CHARS:
        raise ActionRefused(f"the URL is {len(url)} characters long; the maximum is {spec.MAX_WEBHOOK_CHARS}")
    if problem := netcheck.url_problem(url, netcheck.allow_list(settings.SPAWNER["WEBHOOK_ALLOW_HOSTS"])):
        raise ActionRefused(f"the URL {problem}")
    if fmt not in PersonalWebhook.Format.values:
        raise ActionRefused(f"format: json or slack, not {fmt[:20]!r}")
    own, _ = PersonalWebhook.objects.update_or_create(user_id=user.id, defaults={"url": url, "format": fmt})
    return own


WEBHOOKS_ADMIN_ONLY = "only an admin may see and redeliver webhook calls"


def webhook_redeliver(*, delivery_id: int, actor) -> None:
    """Queue a delivered or failed webhook call again (admins only); the cluster sends it."""
    from spawner.engine import webhooks

    if actor is not None and not permissions.may_run_admin_only(actor):
        raise NotAllowed(WEBHOOKS_ADMIN_ONLY)
    if not webhooks.requeue(delivery_id, actor=actor):
        raise ActionRefused(f"webhook call #{delivery_id} is already queued")


# --- clusters ---------------------------------------------------------------------------


def cluster_drain(*, name: str, actor):
    """Tell the live cluster `name` to drain (finish what it runs, take nothing new, release what it
    holds, then exit), at its next reaper step. Admins only; None is the local command line."""
    from spawner.engine import registry

    permissions.require(actor, permissions.may_manage_clusters)
    name = (name or "").strip()
    if not name:
        raise ActionRefused("name the cluster to drain")
    row = registry.request_drain(name, by=actor.get_username() if actor is not None else "command line")
    if row is None:
        live = sorted(registry.live().values_list("name", flat=True))
        known = f"live clusters: {', '.join(live)}" if live else "no cluster is running"
        raise ActionRefused(f"no live cluster is named {name!r} ({known})")
    return row
