"""Every status change of an attempt, run, batch or escalation, with its event, in one place.

Each transition in `TABLE` names the states it may come from and those it may lead to. It is a
conditional update fenced on the current state (and, for a run, on the attempt that speaks), and
it appends its RunEvent in the same transaction, in causal order: a run's end is logged before
the escalation it opens. A transition from a state it does not allow changes nothing and returns
False (a re-delivered task, a late answer from a reaped attempt); services acting for a person turn
that into ActionRefused. No other module writes these statuses (a test checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import models, transaction
from django.db.models import Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from spawner.core import budget, ratelimit, rules
from spawner.engine import events, queue, webhooks
from spawner.models import AgentRun, Batch, Escalation, MergeStep, RunAttempt
from spawner.states import (
    ATTEMPT_RETRYABLE,
    ATTEMPT_TERMINAL,
    BATCH_TERMINAL,
    RUN_ACTIVE,
    RUN_TERMINAL,
    AttemptStatus,
    BatchStatus,
    EventKind,
    RunStatus,
)

OPEN = Escalation.State.OPEN
STEP = MergeStep.State


@dataclass(frozen=True)
class Transition:
    model: type[models.Model]
    field: str
    sources: frozenset[str]
    targets: frozenset[str]


def _t(model, field, sources, targets) -> Transition:
    return Transition(model, field, frozenset(sources), frozenset(targets))


TABLE: dict[str, Transition] = {
    "attempt_started": _t(RunAttempt, "status", {AttemptStatus.QUEUED}, {AttemptStatus.RUNNING}),
    "attempt_ended": _t(RunAttempt, "status", {AttemptStatus.RUNNING}, ATTEMPT_TERMINAL - {AttemptStatus.CANCELLED}),
    "attempt_cancelled": _t(
        RunAttempt, "status", {AttemptStatus.QUEUED, AttemptStatus.RUNNING}, {AttemptStatus.CANCELLED}
    ),
    # From pending (first try), running (an automatic retry) or an unsuccessful end (a person's retry).
    "run_queued": _t(
        AgentRun,
        "status",
        {RunStatus.PENDING, RunStatus.RUNNING} | (RUN_TERMINAL - {RunStatus.SUCCEEDED}),
        {RunStatus.QUEUED},
    ),
    "run_started": _t(AgentRun, "status", {RunStatus.QUEUED}, {RunStatus.RUNNING}),
    "run_ended": _t(
        AgentRun,
        "status",
        {RunStatus.QUEUED, RunStatus.RUNNING},
        {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.LOST},
    ),
    "run_skipped": _t(AgentRun, "status", {RunStatus.PENDING}, {RunStatus.SKIPPED}),
    "run_cancelled": _t(
        AgentRun, "status", {RunStatus.PENDING, RunStatus.QUEUED, RunStatus.RUNNING}, {RunStatus.CANCELLED}
    ),
    "run_reopened": _t(AgentRun, "status", {RunStatus.SKIPPED}, {RunStatus.PENDING}),
    "batch_ended": _t(Batch, "status", {BatchStatus.RUNNING}, BATCH_TERMINAL),
    "batch_reopened": _t(Batch, "status", BATCH_TERMINAL, {BatchStatus.RUNNING}),
    "escalation_assigned": _t(Escalation, "state", {OPEN}, {OPEN}),
    "escalation_closed": _t(Escalation, "state", {OPEN}, {Escalation.State.RESOLVED, Escalation.State.DISMISSED}),
    # A succeeded run runs again on top of the integration branch (a merge conflict's resolution).
    "run_rerun_on_top": _t(AgentRun, "status", {RunStatus.SUCCEEDED}, {RunStatus.QUEUED}),
    # The merge queue (spawner.engine.merging): one step per succeeded run.
    "merge_step_queued": _t(
        MergeStep,
        "state",
        {STEP.WAITING, STEP.CONFLICT, STEP.RESOLVING, STEP.RERUNNING, STEP.GATE_FAILED, STEP.SKIPPED, STEP.REVERTED},
        {STEP.QUEUED},
    ),
    "merge_step_merged": _t(MergeStep, "state", {STEP.QUEUED}, {STEP.MERGED}),
    "merge_step_conflicted": _t(MergeStep, "state", {STEP.QUEUED, STEP.RERUNNING}, {STEP.CONFLICT}),
    "merge_step_gate_failed": _t(MergeStep, "state", {STEP.QUEUED}, {STEP.GATE_FAILED}),
    "merge_step_resolving": _t(MergeStep, "state", {STEP.CONFLICT}, {STEP.RESOLVING}),
    "merge_step_rerunning": _t(MergeStep, "state", {STEP.CONFLICT, STEP.GATE_FAILED}, {STEP.RERUNNING}),
    "merge_step_skipped": _t(
        MergeStep,
        "state",
        {STEP.QUEUED, STEP.WAITING, STEP.CONFLICT, STEP.RESOLVING, STEP.GATE_FAILED, STEP.REVERTED},
        {STEP.SKIPPED},
    ),
    "merge_step_reverted": _t(MergeStep, "state", {STEP.MERGED, STEP.CONFLICT, STEP.GATE_FAILED}, {STEP.REVERTED}),
}


def move(name: str, pk: int, target: str, *, fence: dict | None = None, **fields) -> bool:
    """Apply transition `name` to row `pk` if it is in one of the transition's source states."""
    t = TABLE[name]
    if target not in t.targets:
        raise ValueError(f"{name} cannot lead to {target!r}")
    rows = t.model.objects.filter(pk=pk, **{f"{t.field}__in": t.sources}, **(fence or {}))
    return rows.update(**{t.field: target}, **fields) == 1


# --- attempts and runs ---------------------------------------------------------------------


def attempt_queue(
    run: AgentRun,
    *,
    not_before: datetime,
    reason: EventKind,
    actor=None,
    transition: str = "run_queued",
    **attempt_fields,
) -> RunAttempt | None:
    """Queue the run's next attempt (first try, automatic retry, a person's retry). Caller holds the batch lock.

    `run_rerun_on_top` with `start_commit` and `prompt_note`: a succeeded run again on the integration branch."""
    number = run.attempt + 1
    queued = move(
        transition,
        run.id,
        RunStatus.QUEUED,
        fence={"attempt": run.attempt},
        attempt=number,
        queued_at=timezone.now(),
        finished_at=None,
        error="",
        output_tail="",
        rate_limited_until=None,
    )
    if not queued:
        return None
    # Its broker message is owed from this commit on (the outbox, see engine.queue): no extra write.
    attempt = RunAttempt.objects.create(
        run=run, number=number, not_before=not_before, send_due=queue.attempt_due(), **attempt_fields
    )
    run.attempt, run.status = number, RunStatus.QUEUED
    events.record(
        batch_id=run.batch_id,
        run_id=run.id,
        attempt=number,
        kind=reason,
        status=RunStatus.QUEUED,
        data={"not_before": not_before.isoformat()},
        actor=actor,
    )
    queue.enqueue_attempt(attempt, run.batch_id)
    return attempt


def attempt_start(attempt: RunAttempt, *, now: datetime, host: str, pid: int, log_path: str, cluster: str = "") -> bool:
    """The worker (of the cluster named `cluster`) claims a queued attempt; its run is running."""
    claimed = move(
        "attempt_started",
        attempt.id,
        AttemptStatus.RUNNING,
        log_path=log_path,
        started_at=now,
        heartbeat_at=now,
        host=host,
        worker_pid=pid,
        cluster=cluster,
    )
    if not claimed:
        return False
    move(
        "run_started",
        attempt.run_id,
        RunStatus.RUNNING,
        fence={"attempt": attempt.number},
        started_at=now,
        rate_limited_until=None,
    )
    events.record(
        batch_id=attempt.run.batch_id,
        run_id=attempt.run_id,
        attempt=attempt.number,
        kind=EventKind.RUN_RUNNING,
        status=RunStatus.RUNNING,
        data={"host": host, "worker_pid": pid, "cluster": cluster},
    )
    return True


@dataclass(frozen=True)
class AttemptEnd:
    """What an attempt left behind, read from its files before the transition."""

    status: str
    exit_code: int | None = None
    error: str = ""
    tail: str = ""
    result: dict | list | None = None
    result_error: str = ""
    harvested_from: str = ""  # "host:pid" of the dead worker, when the agent ended while no worker watched
    escalation: tuple[str, str] | None = None  # (kind, reason): a person should look although it succeeded
    retry_after: float | None = None  # rate limited: the delay the API or the CLI advised (None: the default)


@dataclass(frozen=True)
class RateLimitBounds:
    """How long a run may wait out rate limits in all before it ends failed."""

    max_waits: int = 20
    max_total_seconds: float = 1800.0
    max_one_wait: float = 300.0  # a longer advised delay is cut to this


def attempt_end(
    attempt: RunAttempt, end: AttemptEnd, *, backoff_cap: float, rate_limits: RateLimitBounds = RateLimitBounds()
) -> bool:
    """Record an attempt's end, then retry its run or end it. False if the attempt was no longer running."""
    now = timezone.now()
    with transaction.atomic():
        # FOR NO KEY UPDATE: ends of one batch queue here, while rows that merely refer to the batch
        # (events, the heartbeat's neighbours) are inserted without waiting for the lock.
        batch = Batch.objects.select_for_update(no_key=True).get(id=attempt.run.batch_id)
        ended = move(
            "attempt_ended",
            attempt.id,
            end.status,
            finished_at=now,
            exit_code=end.exit_code,
            error=end.error,
        )
        if not ended:
            return False
        run = AgentRun.objects.get(id=attempt.run_id)
        current = run.attempt == attempt.number  # else an older attempt ended: logged, but its run moved on
        started_at = RunAttempt.objects.values_list("started_at", flat=True).get(id=attempt.id)
        ran = (now - started_at).total_seconds() if started_at else 0.0
        if current:
            AgentRun.objects.filter(id=run.id).update(
                exit_code=end.exit_code,
                output_tail=end.tail,
                duration_seconds=(run.duration_seconds or 0.0) + ran,
                result=end.result,
                result_error=end.result_error,
            )
        said = [(EventKind.of("attempt", end.status), {"exit_code": end.exit_code, "error": end.error})]
        said[0][1].update({"seconds": round(ran, 3)} if current else {"superseded": True})
        if end.harvested_from:
            said.append((EventKind.ATTEMPT_HARVESTED, {"exit_code": end.exit_code, "worker": end.harvested_from}))
        for kind, data in said:
            events.record(
                batch_id=run.batch_id, run_id=run.id, attempt=attempt.number, kind=kind, status=end.status, data=data
            )
        if not current:
            return False
        wait, spent_note = None, ""
        if end.status == AttemptStatus.RATE_LIMITED:
            waits, waited = _rate_limit_history(run, before=attempt.number)
            wait = ratelimit.rate_limit_wait(
                advised=end.retry_after,
                waits_so_far=waits,
                waited_so_far=waited,
                max_waits=rate_limits.max_waits,
                max_total=rate_limits.max_total_seconds,
                max_one=rate_limits.max_one_wait,
            )
            if wait is None:
                spent_note = f"; rate-limit waits spent ({waits} waits, {waited:.0f} s in all)"
        delay = rules.retry_delay(
            attempt_status=end.status,
            attempt_number=attempt.number,
            retries=run.retries,
            batch_running=batch.status == BatchStatus.RUNNING,
            cancel_requested=batch.cancel_requested,
            backoff_base=batch.backoff_seconds,
            backoff_cap=backoff_cap,
            handed_back=_handed_back(run) if end.status in RETRY_COUNTED else 0,
            rate_limit_wait=wait,
        )
        if delay is not None and end.status in ATTEMPT_RETRYABLE and not _retry_fits_budget(batch, run, attempt):
            delay, spent_note = None, f"{spent_note}; not retried: the budget does not cover another attempt"
        if delay is not None:
            reason = {
                AttemptStatus.HANDED_BACK: EventKind.RUN_HANDED_BACK,
                AttemptStatus.RATE_LIMITED: EventKind.RUN_RATE_LIMITED,
            }.get(end.status, EventKind.RUN_RETRYING)
            not_before = now + timedelta(seconds=delay)
            if attempt_queue(run, not_before=not_before, reason=reason) and reason == EventKind.RUN_RATE_LIMITED:
                # Not a status: what the pages show as "waiting: rate limited" until the next attempt starts.
                AgentRun.objects.filter(id=run.id, attempt=run.attempt).update(rate_limited_until=not_before)
        else:
            final = rules.run_status_after(end.status)
            error = end.error + spent_note
            if final == RunStatus.CANCELLED:
                _run_close("run_cancelled", run, final, error=error, actor=None)
            elif run_end(run, final, exit_code=end.exit_code, error=error, now=now) and end.escalation:
                escalation_open(batch=batch, run=run, kind=end.escalation[0], reason=end.escalation[1])
    return True


def _retry_fits_budget(batch: Batch, run: AgentRun, attempt: RunAttempt) -> bool:
    """A retry is a new start: the batch's and the task's budgets hold it back as they hold starts."""
    run_budget = AgentRun.objects.values_list("budget_usd", flat=True).get(id=run.id)
    if batch.budget_usd is None and run_budget is None:
        return True
    spent = AgentRun.objects.filter(batch_id=batch.id).aggregate(total=Sum("cost_usd"))["total"] or 0.0
    row = AgentRun.objects.values("cost_usd", "estimate_usd").get(id=run.id)
    last = (RunAttempt.objects.values_list("usage", flat=True).get(id=attempt.id) or {}).get("cost_usd")
    return budget.retry_fits(
        budget_usd=batch.budget_usd,
        spent_usd=spent,
        run_budget_usd=run_budget,
        run_spent_usd=row["cost_usd"] or 0.0,
        next_cost_usd=last if isinstance(last, int | float) else (row["estimate_usd"] or 0.0),
    )


# Outcomes whose retry budget depends on how many earlier attempts spent no retry.
FREE_ATTEMPTS = frozenset({AttemptStatus.HANDED_BACK, AttemptStatus.RATE_LIMITED})
RETRY_COUNTED = ATTEMPT_RETRYABLE | FREE_ATTEMPTS


def _handed_back(run: AgentRun) -> int:
    """The run's attempts that spent no retry: handed back by a stopping cluster, or rate limited."""
    return RunAttempt.objects.filter(run_id=run.id, status__in=FREE_ATTEMPTS).count()


def _rate_limit_history(run: AgentRun, *, before: int) -> tuple[int, float]:
    """(waits, seconds waited) for the run's rate-limited attempts numbered below `before`."""
    rows = {
        n: (status, finished, not_before)
        for n, status, finished, not_before in RunAttempt.objects.filter(run_id=run.id).values_list(
            "number", "status", "finished_at", "not_before"
        )
    }
    waits, waited = 0, 0.0
    for n, (status, finished, _) in rows.items():
        if n < before and status == AttemptStatus.RATE_LIMITED:
            waits += 1
            following = rows.get(n + 1)
            if finished and following:
                waited += max(0.0, (following[2] - finished).total_seconds())
    return waits, waited


def run_end(run: AgentRun, status: str, *, exit_code: int | None, error: str, now: datetime) -> bool:
    """The run's last attempt decided it; a failure that needs a person opens an escalation after the event."""
    if not move("run_ended", run.id, status, fence={"attempt": run.attempt}, finished_at=now, error=error):
        return False
    run.status = status
    events.record(
        batch_id=run.batch_id,
        run_id=run.id,
        attempt=run.attempt,
        kind=EventKind.of("run", status),
        status=status,
        data={"exit_code": exit_code, "error": error} if error or exit_code else {},
    )
    if status == RunStatus.SUCCEEDED:
        for escalation in Escalation.objects.filter(run=run, state=OPEN):
            escalation_close(
                escalation,
                state=Escalation.State.RESOLVED,
                resolution=Escalation.Resolution.SUPERSEDED,
                note="the run succeeded on a later attempt",
                actor=None,
            )
    elif rules.failure_severity(priority=run.priority, status=status) == rules.Severity.ESCALATE:
        if status == RunStatus.LOST:
            kind, reason = Escalation.Kind.LOST, f"run '{run.key}' was lost with no retries left: {error}"
        else:
            kind, reason = Escalation.Kind.P0_FAILED, f"P0 run '{run.key}' ended {status}: {error or 'no error text'}"
        escalation_open(batch=run.batch, run=run, kind=kind, reason=reason)
    return True


def run_skip(run: AgentRun, *, error: str) -> bool:
    """A run that cannot start because a dependency did not succeed."""
    return _run_close("run_skipped", run, RunStatus.SKIPPED, error=error, actor=None)


def run_cancel(run: AgentRun, *, error: str, actor=None) -> bool:
    """Cancel a run that has not ended; its worker sees the attempt change and stops the process.

    The time its running attempt ran counts in the run's duration, as for any other end."""
    ran = 0.0
    if run.status in RUN_ACTIVE:
        now = timezone.now()
        current = RunAttempt.objects.filter(run_id=run.id, number=run.attempt).values_list("id", "started_at").first()
        if current and move("attempt_cancelled", current[0], AttemptStatus.CANCELLED, finished_at=now, error=error):
            ran = (now - current[1]).total_seconds() if current[1] else 0.0
            events.record(
                batch_id=run.batch_id,
                run_id=run.id,
                attempt=run.attempt,
                kind=EventKind.ATTEMPT_CANCELLED,
                status=AttemptStatus.CANCELLED,
                data={"error": error},
                actor=actor,
            )
    ran_so_far = {"duration_seconds": Coalesce("duration_seconds", 0.0) + ran} if ran else {}
    return _run_close("run_cancelled", run, RunStatus.CANCELLED, error=error, actor=actor, **ran_so_far)


def _run_close(name: str, run: AgentRun, status: str, *, error: str, actor, **fields) -> bool:
    if not move(name, run.id, status, finished_at=timezone.now(), error=error, **fields):
        return False
    run.status = status
    events.record(
        batch_id=run.batch_id,
        run_id=run.id,
        attempt=run.attempt or None,
        kind=EventKind.of("run", status),
        status=status,
        data={"error": error} if error else {},
        actor=actor,
    )
    return True


def run_reopen(run: AgentRun, *, because: str, actor=None) -> bool:
    """A skipped run gets its chance again: the dependency that failed is being retried."""
    if not move("run_reopened", run.id, RunStatus.PENDING, finished_at=None, error=""):
        return False
    run.status = RunStatus.PENDING
    events.record(
        batch_id=run.batch_id,
        run_id=run.id,
        kind=EventKind.RUN_PENDING,
        status=RunStatus.PENDING,
        data={"because": because},
        actor=actor,
    )
    return True


# --- batches ---------------------------------------------------------------------------------


def batch_end(batch: Batch, outcome: str, *, figures: dict, now: datetime) -> bool:
    """Every run ended: the batch takes its outcome and its measured figures."""
    if not move("batch_ended", batch.id, outcome, finished_at=now, **figures):
        return False
    batch.status = outcome
    events.record(batch_id=batch.id, kind=EventKind.of("batch", outcome), status=outcome, data=figures)
    return True


def batch_reopen(batch: Batch, *, actor=None) -> bool:
    """A person retries a run of a batch that had ended."""
    if not move("batch_reopened", batch.id, BatchStatus.RUNNING, finished_at=None, cancel_requested=False):
        return False
    batch.status, batch.cancel_requested = BatchStatus.RUNNING, False
    events.record(batch_id=batch.id, kind=EventKind.BATCH_REOPENED, status=BatchStatus.RUNNING, actor=actor)
    return True


# --- escalations -----------------------------------------------------------------------------


def escalation_open(*, batch: Batch, run: AgentRun | None, kind: str, reason: str) -> Escalation | None:
    """One open escalation per run and kind (or per batch for votes)."""
    if Escalation.objects.filter(batch=batch, run=run, kind=kind, state=OPEN).exists():
        return None
    escalation = Escalation.objects.create(batch=batch, run=run, kind=kind, reason=reason)
    events.record(
        batch_id=batch.id,
        run_id=run.id if run else None,
        kind=EventKind.ESCALATION_OPENED,
        data={"escalation": escalation.id, "kind": kind, "reason": reason},
    )
    webhooks.notify(batch, "escalation.opened", {"escalation": escalation.id, "kind": kind, "reason": reason})
    if kind == Escalation.Kind.BUDGET:
        webhooks.budget_reached(batch, escalation=escalation.id, reason=reason)
    return escalation


def escalation_assign(escalation: Escalation, *, assignee, actor) -> bool:
    if not move("escalation_assigned", escalation.id, OPEN, assignee=assignee):
        return False
    events.record(
        batch_id=escalation.batch_id,
        run_id=escalation.run_id,
        kind=EventKind.ESCALATION_ASSIGNED,
        data={"escalation": escalation.id, "assignee": assignee.get_username() if assignee else None},
        actor=actor,
    )
    webhooks.escalation_assigned(escalation, assignee)
    return True


def escalation_close(escalation: Escalation, *, state: str, resolution: str, note: str, actor) -> bool:
    closed = move(
        "escalation_closed",
        escalation.id,
        state,
        resolution=resolution,
        resolution_note=note,
        resolved_by=actor if actor is not None and actor.is_authenticated else None,
        resolved_at=timezone.now(),
    )
    if not closed:
        return False
    events.record(
        batch_id=escalation.batch_id,
        run_id=escalation.run_id,
        kind=EventKind.of("escalation", state),
        data={"escalation": escalation.id, "resolution": resolution, "note": note},
        actor=actor,
    )
    return True


# --- the merge queue -------------------------------------------------------------------------


def merge_step_create(*, batch: Batch, run: AgentRun, position: int, state: str) -> MergeStep | None:
    """A succeeded run enters its batch's merge queue (queued, or waiting for a person); once per run."""
    if state not in (STEP.QUEUED, STEP.WAITING):
        raise ValueError(f"a merge step starts queued or waiting, not {state!r}")
    step, created = MergeStep.objects.get_or_create(
        run=run, defaults={"batch": batch, "position": position, "state": state}
    )
    if not created:
        return None
    events.record(
        batch_id=batch.id,
        run_id=run.id,
        kind=EventKind.of("merge", state),
        status=state,
        data={"step": step.id, "key": run.key, "position": position},
    )
    return step


def merge_step_move(step: MergeStep, name: str, target: str, *, actor=None, data: dict | None = None, **fields) -> bool:
    """Move a merge step (see TABLE) and log it as `merge.<state>`, with what the page shows."""
    if actor is not None and actor.is_authenticated:
        fields["acted_by"] = actor
    if not move(name, step.id, target, **fields):
        return False
    for key, value in fields.items():
        setattr(step, key, value)
    step.state = target
    events.record(
        batch_id=step.batch_id,
        run_id=step.run_id,
        kind=EventKind.of("merge", target),
        status=target,
        data={"step": step.id, "key": step.run.key, "position": step.position, **(data or {})},
        actor=actor,
    )
    return True
