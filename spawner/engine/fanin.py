"""Fan-in: combine a batch's results when it ends, escalate what needs a person, and ask for review."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model

from spawner import permissions
from spawner.core import aggregation, review
from spawner.engine import events, transitions, webhooks
from spawner.models import Aggregation, Batch, Escalation, PersonalWebhook, WebhookDelivery
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


def review_summary(batch: Batch) -> review.ReviewSummary:
    """Who approved, how many approvals count (SPAWNER REVIEW_APPROVALS, REVIEW_OWNER_COUNTS), the state."""
    rows = batch.reviews.order_by("id").values_list("author_id", "author__username", "decision")
    return review.summarise(
        list(rows),
        owner_id=batch.owner_id,
        needed=settings.SPAWNER.get("REVIEW_APPROVALS", 1),
        owner_counts=settings.SPAWNER.get("REVIEW_OWNER_COUNTS", False),
    )


def reviewers_to_ask(batch: Batch) -> list:
    """The people a review request goes to on their own notification webhook: active, with the
    permission to review, whose approval would count (not the owner, unless REVIEW_OWNER_COUNTS),
    who have not approved it already, and who set an address of their own."""
    people = get_user_model().objects.with_perm(permissions.REVIEW, is_active=True, include_superusers=True)
    if batch.owner_id is not None and not settings.SPAWNER.get("REVIEW_OWNER_COUNTS", False):
        people = people.exclude(id=batch.owner_id)
    latest: dict[int, str] = {}
    for author_id, decision in batch.reviews.order_by("id").values_list("author_id", "decision"):
        if decision in (review.APPROVE, review.REQUEST_CHANGES):
            latest[author_id] = decision
    approved = [a for a, d in latest.items() if d == review.APPROVE]
    with_address = PersonalWebhook.objects.exclude(url="").values("user_id")
    return list(people.exclude(id__in=approved).filter(id__in=with_address).order_by("id"))


def review_request(batch: Batch, agg: Aggregation) -> list[WebhookDelivery]:
    """Queue `review.requested` when a batch ends with a combined result that waits for sign-off
    (call in the transaction that ends it): not when the result is empty (nothing to review) or
    already approved. To the batch's webhook and to each reviewer's own address (`reviewers_to_ask`)."""
    if agg.status == "empty":
        return []
    summary = review_summary(batch)
    if summary.state == "approved":
        return []
    data = {
        "aggregation": agg.status,
        "review_state": summary.state,
        "approvals_needed": summary.needed,
        "approvals_counted": summary.counted,
    }
    return webhooks.review_requested(batch, data, reviewers_to_ask(batch))
