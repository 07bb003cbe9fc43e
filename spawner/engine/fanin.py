"""Fan-in: combine a batch's results when it ends, and escalate what needs a person."""

from __future__ import annotations

from spawner.core import aggregation
from spawner.engine import events, transitions
from spawner.models import Aggregation, Batch, Escalation
from spawner.states import EventKind, Strategy


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
            usage=r.usage,
            cost_usd=r.cost_usd,
        )
        for r in batch.runs.order_by("order")
    ]


def aggregation_compute(batch: Batch) -> Aggregation:
    """Combine the batch's results (call when it ends, under its lock); escalate what needs a person."""
    strategy = batch.aggregation or Strategy.ALL
    combined = aggregation.aggregate(strategy, run_results(batch))
    agg, _ = Aggregation.objects.update_or_create(
        batch=batch, defaults={"strategy": strategy, "status": combined.status, "data": combined.as_data()}
    )
    events.record(
        batch_id=batch.id,
        kind=EventKind.AGGREGATION_COMPUTED,
        status=combined.status,
        data={"strategy": strategy, "used": len(combined.used), "unused": len(combined.unused)},
    )
    if combined.escalate:
        transitions.escalation_open(batch=batch, run=None, kind=Escalation.Kind.VOTE, reason=combined.escalate)
    return agg
