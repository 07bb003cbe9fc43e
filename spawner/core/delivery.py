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
