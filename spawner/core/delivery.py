"""What to do after one try at delivering a webhook: done, try again later, or give up."""

from __future__ import annotations

from dataclasses import dataclass

DELIVERED = "delivered"
RETRY = "retry"
FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    ok: bool = False
    status: int | None = None  # the HTTP status, when there was a response
    error: str = ""
    final: bool = False  # retrying cannot help: a refused address, a redirect


def decide(outcome: Outcome, attempts: int, *, max_attempts: int, base: float, cap: float) -> tuple[str, float]:
    """(DELIVERED | RETRY | FAILED, seconds until the next try) after `attempts` tries."""
    if outcome.ok:
        return DELIVERED, 0.0
    if outcome.final or attempts >= max_attempts:
        return FAILED, 0.0
    if outcome.status is not None and 400 <= outcome.status < 500 and outcome.status not in (408, 425, 429):
        return FAILED, 0.0  # the receiver refuses this request; it will refuse it again
    return RETRY, min(base * 2 ** (attempts - 1), cap)


def slack_text(payload: dict) -> str:
    """One line for a chat channel (a Slack-compatible incoming webhook's `text`) from an event's payload."""
    batch = f"Batch #{payload.get('batch')} {payload.get('name', '')}".rstrip()
    event = payload.get("event", "")
    if event == "batch.ended":
        wall = payload.get("wall_seconds")
        return f"{batch} ended: {payload.get('status')}" + (f" (wall {wall:.1f} s)." if wall is not None else ".")
    if event == "escalation.opened":
        what = f"escalation #{payload.get('escalation')} ({payload.get('kind')})"
        return f"{batch} needs a person: {what}: {payload.get('reason')}"
    if event == "escalation.assigned":
        who = payload.get("assignee")
        return f"{batch}: escalation #{payload.get('escalation')} " + (f"assigned to {who}." if who else "unassigned.")
    if event == "review.requested":
        needed, counted = payload.get("approvals_needed"), payload.get("approvals_counted")
        tally = f" ({counted} of {needed} approvals)" if needed is not None and counted is not None else ""
        return f"{batch}: its result waits for review{tally}."
    if event == "budget.reached":
        return f"{batch} reached its budget: {payload.get('reason')}"
    return f"{batch}: {event}"
