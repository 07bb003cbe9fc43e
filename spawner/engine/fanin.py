"""Fan-in writes: the batch's aggregation, escalations of what failed, and team reviews."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from spawner import permissions
from spawner.core import aggregation
from spawner.engine import events, webhooks
from spawner.errors import ActionRefused
from spawner.models import AgentRun, Aggregation, Batch, Escalation, Review
from spawner.states import RunStatus, Strategy


def run_results(batch: Batch) -> list[aggregation.RunResult]:
    return [
        aggregation.RunResult(
            key=r.key,
            status=r.status,
            priority=r.priority,
            order=r.order,
            finished=r.finished_at.timestamp() if r.finished_at else None,
            result=r.result,
            result_error=r.result_error,
            output_tail=r.output_tail[-4000:],
            error=r.error,
        )
        for r in batch.runs.order_by("order")
    ]


def aggregation_compute(batch: Batch) -> Aggregation:
    """Combine the batch's results (call when it ends, under its lock); escalate what needs a person."""
    strategy = batch.aggregation or Strategy.ALL
    data = aggregation.aggregate(strategy, run_results(batch))
    agg, _ = Aggregation.objects.update_or_create(
        batch=batch, defaults={"strategy": strategy, "status": data["status"], "data": data}
    )
    events.record(
        batch_id=batch.id,
        kind="aggregation.computed",
        status=data["status"],
        data={"strategy": strategy, "used": len(data["used"]), "unused": len(data["unused"])},
    )
    if data["escalate"]:
        escalation_open(batch=batch, run=None, kind=Escalation.Kind.VOTE, reason=data["escalate"])
    return agg


def escalation_open(*, batch: Batch, run: AgentRun | None, kind: str, reason: str) -> Escalation | None:
    """One open escalation per run and kind (or per batch for votes)."""
    if Escalation.objects.filter(batch=batch, run=run, kind=kind, state=Escalation.State.OPEN).exists():
        return None
    escalation = Escalation.objects.create(batch=batch, run=run, kind=kind, reason=reason)
    events.record(
        batch_id=batch.id,
        run_id=run.id if run else None,
        kind="escalation.opened",
        data={"escalation": escalation.id, "kind": kind, "reason": reason},
    )
    webhooks.notify(batch, "escalation.opened", {"escalation": escalation.id, "kind": kind, "reason": reason})
    return escalation


def on_run_ended(run: AgentRun, status: str, error: str) -> None:
    """A failed P0 run or a lost run out of retries goes to a person; a success closes what it fixed."""
    batch = run.batch
    if status == RunStatus.SUCCEEDED:
        for escalation in Escalation.objects.filter(run=run, state=Escalation.State.OPEN):
            _close(
                escalation,
                state=Escalation.State.RESOLVED,
                resolution=Escalation.Resolution.SUPERSEDED,
                note="the run succeeded on a later attempt",
                actor=None,
            )
        return
    if status == RunStatus.LOST:
        escalation_open(
            batch=batch,
            run=run,
            kind=Escalation.Kind.LOST,
            reason=f"run '{run.key}' was lost with no retries left: {error}",
        )
    elif run.priority == 0 and status in (RunStatus.FAILED, RunStatus.TIMED_OUT):
        escalation_open(
            batch=batch,
            run=run,
            kind=Escalation.Kind.P0_FAILED,
            reason=f"P0 run '{run.key}' ended {status}: {error or 'no error text'}",
        )


def _close(escalation: Escalation, *, state: str, resolution: str, note: str, actor) -> None:
    changed = Escalation.objects.filter(id=escalation.id, state=Escalation.State.OPEN).update(
        state=state,
        resolution=resolution,
        resolution_note=note,
        resolved_by=actor if actor is not None and actor.is_authenticated else None,
        resolved_at=timezone.now(),
    )
    if not changed:
        raise ActionRefused(f"escalation #{escalation.id} is no longer open")
    events.record(
        batch_id=escalation.batch_id,
        run_id=escalation.run_id,
        kind=f"escalation.{state}",
        data={"escalation": escalation.id, "resolution": resolution, "note": note},
        actor=actor,
    )


def escalation_assign(*, escalation: Escalation, assignee, actor) -> None:
    permissions.require(actor, permissions.may_resolve_escalations)
    with transaction.atomic():
        if not Escalation.objects.filter(id=escalation.id, state=Escalation.State.OPEN).update(assignee=assignee):
            raise ActionRefused(f"escalation #{escalation.id} is no longer open")
        events.record(
            batch_id=escalation.batch_id,
            run_id=escalation.run_id,
            kind="escalation.assigned",
            data={"escalation": escalation.id, "assignee": assignee.get_username() if assignee else None},
            actor=actor,
        )


def escalation_resolve(*, escalation: Escalation, action: str, note: str = "", actor) -> None:
    """retry (the run gets a new attempt), accept (the partial result stands) or dismiss (with a reason)."""
    from spawner import services

    permissions.require(actor, permissions.may_resolve_escalations)
    if action == "dismiss" and not note.strip():
        raise ActionRefused("say why you dismiss it")
    if action == "retry":
        if escalation.run is None:
            raise ActionRefused("this escalation concerns the whole batch: retry its runs one by one")
        permissions.require(actor, permissions.may_launch)
        with transaction.atomic():
            services.run_retry(run=escalation.run, actor=actor)
            _close(
                escalation,
                state=Escalation.State.RESOLVED,
                resolution=Escalation.Resolution.RETRIED,
                note=note,
                actor=actor,
            )
        return
    if action == "accept":
        _close(
            escalation,
            state=Escalation.State.RESOLVED,
            resolution=Escalation.Resolution.ACCEPTED,
            note=note,
            actor=actor,
        )
    elif action == "dismiss":
        _close(
            escalation,
            state=Escalation.State.DISMISSED,
            resolution=Escalation.Resolution.DISMISSED,
            note=note,
            actor=actor,
        )
    else:
        raise ActionRefused(f"unknown action {action!r}: retry, accept or dismiss")


def review_submit(*, batch: Batch, author, decision: str, comment: str = "") -> Review:
    permissions.require(author, permissions.may_review)
    if decision not in Review.Decision.values:
        raise ActionRefused(f"unknown decision {decision!r}")
    if decision == Review.Decision.REQUEST_CHANGES and not comment.strip():
        raise ActionRefused("say what should change")
    with transaction.atomic():
        review = Review.objects.create(batch=batch, author=author, decision=decision, comment=comment)
        events.record(batch_id=batch.id, kind=f"review.{decision}", data={"review": review.id}, actor=author)
    return review


def review_state(batch: Batch) -> str:
    """approved, changes_requested or pending: each reviewer's latest decision counts."""
    latest: dict[int, str] = {}
    for author_id, decision in batch.reviews.exclude(decision=Review.Decision.COMMENT).values_list(
        "author_id", "decision"
    ):
        latest[author_id] = decision
    if Review.Decision.REQUEST_CHANGES in latest.values():
        return "changes_requested"
    if Review.Decision.APPROVE in latest.values():
        return "approved"
    return "pending"


def open_escalations_count() -> int:
    return Escalation.objects.filter(state=Escalation.State.OPEN).count()
