"""Pure decisions of the broker outbox: when a message that is owed is due, what to send in a round.

A row that needs a broker message (a queued attempt, a batch whose merge queue must run) carries
`send_due`, written in the transaction that makes it need one. The committing process sends right
after the commit and clears it (the acknowledgement); a cluster's sender loop sends what is still
owed once it is due. These functions decide the times; the engine (`spawner.engine.queue`) acts.

No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# Exception names (anywhere in the class's ancestry) that mean "the broker could not be reached",
# as opposed to a bad message: redis-py's ConnectionError and TimeoutError, the socket's own errors.
UNREACHABLE = frozenset({"ConnectionError", "TimeoutError", "BusyLoadingError", "OSError"})


@dataclass(frozen=True)
class Timing:
    grace: float  # the committing process's head start before a loop may send a row it just wrote
    retry: float  # after a failed send: first wait
    retry_max: float  # ... doubling up to this
    claim: float  # a loop's claim holds the row this long (a loop that dies mid-send gives it back)


def due_on_write(now: datetime, timing: Timing) -> datetime:
    """When a loop may send a message just written: after the committer's head start, so a healthy
    commit-then-send is never duplicated by another cluster's loop."""
    return now + timedelta(seconds=timing.grace)


def due_after_failure(now: datetime, failures: int, timing: Timing) -> datetime:
    """The next try after `failures` sends in a row failed (1 = the first): doubling, capped."""
    delay = timing.retry * (2 ** max(0, failures - 1))
    return now + timedelta(seconds=min(delay, timing.retry_max))


def claimed_until(now: datetime, timing: Timing) -> datetime:
    """A loop claims the rows it will send by pushing them this far forward."""
    return now + timedelta(seconds=timing.claim)


def unreachable(exc: BaseException) -> bool:
    """The broker is down or unreachable (so stop this round and try again later), rather than one
    message being at fault (so skip that one and go on)."""
    return any(cls.__name__ in UNREACHABLE for cls in type(exc).__mro__)


@dataclass(frozen=True)
class Round:
    sent: tuple  # keys sent: acknowledge them
    retry: tuple  # keys not sent: due again after a failure's delay
    broker_down: bool


def send_round(keys, send) -> Round:
    """Send each key in order with `send(key)`; at the first sign the broker is unreachable, stop:
    that key and every later one wait for the next try (a dead broker is asked once, not N times).
    A key whose own send fails otherwise is retried later too, and the round goes on."""
    keys = list(keys)
    sent, retry = [], []
    for i, key in enumerate(keys):
        try:
            send(key)
        except Exception as exc:  # noqa: BLE001 - the caller logs; here only its kind matters
            if unreachable(exc):
                return Round(tuple(sent), tuple(retry + keys[i:]), True)
            retry.append(key)
            continue
        sent.append(key)
    return Round(tuple(sent), tuple(retry), False)
