"""Apply the scheduler's decisions to a batch: start, skip, cancel, finish.

`batch_advance` is called after every change to a batch. It locks the batch row
first (the one lock order everything follows), so concurrent callers queue.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from spawner.core import scheduling, timings
from spawner.engine import budgets, contention, fanin, merging, transitions, webhooks
from spawner.models import AgentRun, AgentType, Batch, RunAttempt, RunEvent
from spawner.states import BATCH_TERMINAL, RUN_ACTIVE, BatchStatus, EventKind, FailurePolicy, Mode, RunStatus, Strategy


def _type_limits(runs: list[AgentRun]) -> dict:
    type_ids = {r.agent_type_id for r in runs}
    types = {t.id: t for t in AgentType.objects.filter(id__in=type_ids)}
    # Lock capped and rate-limited types (batch, then types, by id) so two batches cannot both count one free slot.
    capped_ids = sorted(t.id for t in types.values() if t.max_concurrency or t.requests_per_minute)
    list(AgentType.objects.select_for_update(no_key=True).filter(id__in=capped_ids).order_by("id").values_list("id"))
    capped = [t.id for t in types.values() if t.max_concurrency]
    active = dict(
        AgentRun.objects.filter(agent_type_id__in=capped, status__in=RUN_ACTIVE)
        .values_list("agent_type_id")
        .annotate(n=Count("id"))
    )
    staggered = [t.id for t in types.values() if t.spawn_stagger_seconds]
    last_start = dict(
        RunAttempt.objects.filter(run__agent_type_id__in=staggered)
        .values_list("run__agent_type_id")
        .annotate(last=Max("not_before"))
    )
    return {
        **_rate_limits(types),
        "type_caps": {str(i): types[i].max_concurrency for i in capped},
        "type_active": {str(i): n for i, n in active.items()},
        "type_stagger": {str(i): types[i].spawn_stagger_seconds for i in staggered},
        "type_next_start": {
            str(i): last.timestamp() + types[i].spawn_stagger_seconds for i, last in last_start.items()
        },
    }


def _rate_limits(types: dict) -> dict:
    """Each rate-limited type's starts (made or scheduled) and the tokens its calls used, in the last minute."""
    since = timezone.now() - timedelta(seconds=60)
    rpm = [t.id for t in types.values() if t.requests_per_minute]
    tpm = [t.id for t in types.values() if t.tokens_per_minute]
    starts: dict[str, list[float]] = {str(i): [] for i in rpm}
    rows = RunAttempt.objects.filter(run__agent_type_id__in=rpm).filter(
        Q(started_at__gt=since) | Q(started_at__isnull=True, not_before__gt=since)
    )
    for type_id, started, not_before in rows.values_list("run__agent_type_id", "started_at", "not_before"):
        starts[str(type_id)].append((started or not_before).timestamp())
    tokens: dict[str, list[tuple[float, int]]] = {str(i): [] for i in tpm}
    used = RunAttempt.objects.filter(run__agent_type_id__in=tpm, finished_at__gt=since, usage__isnull=False)
    for type_id, finished, usage in used.values_list("run__agent_type_id", "finished_at", "usage"):
        if isinstance(usage, dict):
            n = sum(int(usage.get(k) or 0) for k in ("input_tokens", "output_tokens", "cache_read_tokens"))
            tokens[str(type_id)].append((finished.timestamp(), n))
    return {
        "type_rpm": {str(i): types[i].requests_per_minute for i in rpm},
        "type_starts": starts,
        "type_tpm": {str(i): types[i].tokens_per_minute for i in tpm},
        "type_tokens": tokens,
    }


def batch_advance(batch_id: int, *, actor=None) -> scheduling.Decision | None:
    """Apply what the scheduler decides for the batch now (again if the database broke a deadlock)."""
    return contention.again_on_conflict(lambda: _advance(batch_id), what=f"advancing batch {batch_id}")


def _advance(batch_id: int) -> scheduling.Decision | None:
    with transaction.atomic():
        batch = Batch.objects.select_for_update(no_key=True).filter(id=batch_id).first()
        if batch is None or batch.status != BatchStatus.RUNNING:
            return None
        runs = list(batch.runs.all())
        by_key = {r.key: r for r in runs}
        now = timezone.now()
        limits = scheduling.Limits(
            max_parallel=batch.max_parallel,
            sequential=batch.mode == Mode.SEQUENTIAL,
            fail_fast=batch.failure_policy == FailurePolicy.FAIL_FAST,
            cancel_requested=batch.cancel_requested,
            race=batch.aggregation == Strategy.FIRST_SUCCESS,
            **_type_limits(runs),
            budget=(budget := budgets.budget_view(batch, runs)),
        )
        views = [
            scheduling.RunView(
                key=r.key,
                status=r.status,
                priority=r.priority,
                depends_on=tuple(r.depends_on),
                agent_type=str(r.agent_type_id),
                order=r.order,
            )
            for r in runs
        ]
        decision = scheduling.decide(views, limits, now.timestamp())
        for key in decision.skip:
            run = by_key[key]
            failed = [d for d in run.depends_on if by_key[d].status != RunStatus.SUCCEEDED]
            transitions.run_skip(run, error=f"dependency did not succeed: {', '.join(failed)}")
        for key in decision.cancel:
            transitions.run_cancel(by_key[key], error=_stop_reason(batch))
        if budget is not None:
            _apply_budget(batch, by_key, budget, decision)
        for key, not_before in decision.start:
            transitions.attempt_queue(
                by_key[key],
                not_before=now + timedelta(seconds=max(0.0, not_before - now.timestamp())),
                reason=EventKind.RUN_QUEUED,
            )
        if decision.finished:
            batch_finish(batch, decision.outcome)
        return decision


def _apply_budget(batch: Batch, by_key: dict, budget, decision: scheduling.Decision) -> None:
    """Budgets (spawner.core.budget): skip and cancel what the budget stopped, escalate once."""
    for key in decision.budget_skip:
        transitions.run_skip(by_key[key], error=budgets.skip_reason(batch, by_key[key], budget))
    for key in decision.budget_cancel:
        transitions.run_cancel(by_key[key], error="budget: the batch's budget is reached (on_budget: cancel_running)")
    if decision.budget_reached:
        budgets.escalate(
            batch,
            budget,
            skipped=len(decision.budget_skip),
            cancelled=len(decision.budget_cancel),
            open_fn=transitions.escalation_open,
        )


def _stop_reason(batch: Batch) -> str:
    if batch.cancel_requested:
        return "cancelled"
    if batch.aggregation == Strategy.FIRST_SUCCESS:
        return "cancelled: another agent won the race"
    return "cancelled: fail_fast"


def batch_finish(batch: Batch, outcome: str) -> None:
    """Close the batch with its figures, combine its results, tell its webhook, ask for review."""
    now = timezone.now()
    figures = _batch_figures(batch, finished_at=now)
    if not transitions.batch_end(batch, outcome, figures=figures, now=now):
        return
    agg = fanin.aggregation_compute(batch)
    merging.enter_queue(batch)  # its git work runs in a q2 task after this transaction
    webhooks.notify(batch, "batch.ended", {**figures, "aggregation": agg.status})
    fanin.review_request(batch, agg)


def advance_all_running() -> int:
    """Backstop for batches that may be stalled: waiting on a slot freed elsewhere (a type cap),
    or with every run ended but the batch not closed. Batches with work in flight advance anyway
    when that work ends, so they are left alone."""
    running = Batch.objects.filter(status=BatchStatus.RUNNING)
    waiting = running.filter(runs__status=RunStatus.PENDING)
    idle = running.exclude(runs__status__in=[*RUN_ACTIVE, RunStatus.PENDING])
    ids = sorted(set(waiting.values_list("id", flat=True)) | set(idle.values_list("id", flat=True)))
    for batch_id in ids:
        batch_advance(batch_id)
    return len(ids)


def _batch_figures(batch, *, finished_at: datetime) -> dict[str, float | None]:
    return batch_measure(batch, end=finished_at).stored()


def batch_measure(batch, *, end: datetime, own_pass: bool = False, work: bool = True) -> timings.Measure:
    """The batch's figures at `end` under the definitions of spawner.core.timings (all its
    attempts, or its own pass: without the attempts a person asked for). `work=False`: the clock
    only (wall, since launch, idle), without reading the attempts (a running batch's header)."""
    ends = {EventKind.of("batch", status) for status in BATCH_TERMINAL}
    closed, ended_at = [], None
    for kind, at in RunEvent.objects.filter(batch_id=batch.id, kind__in=[*ends, EventKind.BATCH_REOPENED]).values_list(
        "kind", "created_at"
    ):
        if kind == EventKind.BATCH_REOPENED and ended_at is not None:
            closed.append((ended_at.timestamp(), at.timestamp()))
            ended_at = None
        elif kind != EventKind.BATCH_REOPENED:
            ended_at = at
    capacity = 1 if batch.mode == Mode.SEQUENTIAL else batch.max_parallel
    if not work and not own_pass:
        clock = dict(launched=batch.launched_at.timestamp(), end=end.timestamp(), closed=closed)
        return timings.measure(attempts=[], deps={}, capacity=capacity, **clock)
    by_person = set(
        RunEvent.objects.filter(batch_id=batch.id, kind=EventKind.RUN_RETRIED).values_list("run__key", "attempt")
    )
    rows = RunAttempt.objects.filter(run__batch=batch).values_list(
        "run__key", "number", "queued_at", "started_at", "finished_at"
    )
    attempts = [
        timings.Attempt(
            key=key,
            queued=queued.timestamp() if queued else None,
            started=started.timestamp() if started else None,
            finished=finished.timestamp() if finished else None,
            by_person=(key, number) in by_person,
        )
        for key, number, queued, started, finished in rows
    ]
    deps = {key: tuple(d) for key, d in batch.runs.values_list("key", "depends_on")}
    return timings.measure(
        launched=batch.launched_at.timestamp(),
        end=end.timestamp(),
        attempts=attempts,
        deps=deps,
        capacity=capacity,
        own_pass=own_pass,
        closed=closed,
    )
