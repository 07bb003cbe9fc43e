"""Named rules the engine follows: retry, backoff, a batch's outcome, how much a failure matters.

Pure functions: the clock, the state and the settings are arguments, never read here.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from spawner.states import ATTEMPT_RETRYABLE, RUN_FAILED, AttemptStatus, BatchStatus, RunStatus


def backoff_delay(attempt_number: int, *, base: float, cap: float) -> float:
    """Seconds before the next attempt after attempt `attempt_number` failed: base, 2 x base, ... up to cap."""
    return min(base * (2 ** (attempt_number - 1)), cap)


def retry_delay(
    *,
    attempt_status: str,
    attempt_number: int,
    retries: int,
    batch_running: bool,
    cancel_requested: bool,
    backoff_base: float,
    backoff_cap: float,
    handed_back: int = 0,
    rate_limit_wait: float | None = None,
) -> float | None:
    """Seconds until the run's next attempt, or None when this attempt's outcome is final.

    Only failures another attempt may fix are retried (failed, timed out, lost), only while
    retries are left (`retries` counts the extra attempts after the first) and the batch goes on.
    An attempt handed back by a stopping cluster was not the agent's failure: it is followed at
    once, and it counts against nothing (`handed_back` counts the run's hand-backs and rate-limit
    waits, this one included). A rate-limited attempt is followed after `rate_limit_wait` (from
    `spawner.core.ratelimit.rate_limit_wait`; None: its waits are spent, the run ends failed), also
    spending no retry.
    """
    if not batch_running or cancel_requested:
        return None
    if attempt_status == AttemptStatus.HANDED_BACK:
        return 0.0
    if attempt_status == AttemptStatus.RATE_LIMITED:
        return rate_limit_wait
    spent = attempt_number - handed_back
    if attempt_status not in ATTEMPT_RETRYABLE or spent > retries:
        return None
    return backoff_delay(spent, base=backoff_base, cap=backoff_cap)


def run_status_after(attempt_status: str) -> str:
    """The run's final state when its attempt ended with `attempt_status` and no attempt follows."""
    if attempt_status == AttemptStatus.SUCCEEDED:
        return RunStatus.SUCCEEDED
    if attempt_status == AttemptStatus.HANDED_BACK:  # only when its batch closed meanwhile
        return RunStatus.CANCELLED
    if attempt_status == AttemptStatus.RATE_LIMITED:  # its rate-limit waits were spent
        return RunStatus.FAILED
    return attempt_status


def batch_outcome(statuses: Sequence[str], *, cancel_requested: bool, fail_fast: bool, race: bool = False) -> str:
    """The final status of a batch whose runs all ended with `statuses`."""
    if cancel_requested:
        return BatchStatus.CANCELLED
    if all(s == RunStatus.SUCCEEDED for s in statuses):
        return BatchStatus.SUCCEEDED
    if race and any(s == RunStatus.SUCCEEDED for s in statuses):
        return BatchStatus.SUCCEEDED  # a race needs one winner
    if fail_fast and any(s in RUN_FAILED for s in statuses):
        return BatchStatus.FAILED
    if any(s == RunStatus.SUCCEEDED for s in statuses):
        return BatchStatus.PARTIAL
    return BatchStatus.FAILED


class Severity(StrEnum):
    """What a run's failure means for the people watching: P0 escalates, P1 warns, P2 is a note."""

    ESCALATE = "escalate"
    WARN = "warn"
    NOTE = "note"
    NONE = "none"


def failure_severity(*, priority: int, status: str) -> Severity:
    """A lost run out of retries always goes to a person; otherwise the priority decides."""
    if status == RunStatus.LOST:
        return Severity.ESCALATE
    if status not in RUN_FAILED:
        return Severity.NONE
    return {0: Severity.ESCALATE, 1: Severity.WARN}.get(priority, Severity.NOTE)
