"""The reaper: attempts whose heartbeat stopped are lost; batches that stalled move on.

Each step is one function that returns how much work it found, and claims work
with conditional updates, so several reapers (one per cluster) can run side by side.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from spawner.engine import dispatch, execution, merging, queue, recovery, registry
from spawner.models import RunAttempt
from spawner.runners.command import owns_group
from spawner.states import AttemptStatus

log = logging.getLogger(__name__)


def reap_lost(now=None) -> int:
    """Attempts whose heartbeat is older than the lease: their worker is gone. An agent that ended on
    its own meanwhile is harvested (its exit record is its result); the rest are lost, then retried
    or failed. An attempt of another machine is reaped here only when no cluster runs there any more;
    its agent is stopped by then: its launcher fences it once its worker's heartbeat is older than the
    fence time, which is shorter than the lease."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.SPAWNER["LEASE_SECONDS"])
    stale = RunAttempt.objects.select_related("run__agent_type", "run__batch").filter(
        status=AttemptStatus.RUNNING, heartbeat_at__lt=now - lease
    )
    reaped = 0
    live_hosts = set(_live().values_list("host", flat=True))
    for attempt in stale:
        if attempt.host != execution.HOST and attempt.host in live_hosts:
            continue  # its own host's reaper can stop the agent and read its exit record; leave it to that one
        silent = (now - attempt.heartbeat_at).total_seconds()
        # Stop the group first: once the shim is dead its exit record can no longer change.
        _kill_orphan(attempt)
        try:  # one attempt that cannot be recorded must not stop the others
            finished = recovery.finish_unwatched(
                attempt,
                otherwise=AttemptStatus.LOST,
                error=f"worker {attempt.host}:{attempt.worker_pid} stopped sending heartbeats "
                f"({silent:.0f} s > lease {lease.total_seconds():.0f} s)",
            )
        except Exception:
            log.exception("could not mark attempt %s lost", attempt.id)
            continue
        reaped += finished is not None
    return reaped


def resend_abandoned(now=None) -> int:
    """Queued attempts whose worker died while holding them (waiting out a backoff or a
    stagger) go back to the broker. A copy that reaches a live holder is a no-op (fencing)."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.SPAWNER["LEASE_SECONDS"])
    abandoned = RunAttempt.objects.select_related("run").filter(
        status=AttemptStatus.QUEUED, heartbeat_at__lt=now - lease, not_before__lt=now - lease
    )
    sent = 0
    for attempt in abandoned:
        # Claim the resend, so two reapers do not both send it.
        # Clearing the holder and stamping the send keeps resend_stranded from sending it a second time.
        if RunAttempt.objects.filter(id=attempt.id, heartbeat_at=attempt.heartbeat_at).update(
            heartbeat_at=None, held_by="", sent_at=now
        ):
            queue.enqueue_attempt(attempt, attempt.run.batch_id)
            sent += 1
    return sent


def _kill_orphan(attempt: RunAttempt) -> None:
    """The dead worker's agent process may still run here (its launcher fences it, unless it was
    stopped too): stop its group, once sure the group is still this attempt's."""
    if attempt.host != execution.HOST or not attempt.pgid:
        return
    if not owns_group(attempt.pgid, recovery.log_path_of(attempt)):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(attempt.pgid, signal.SIGKILL)


def tick() -> int:
    try:
        found = reap_lost() + resend_abandoned() + recovery.resend_stranded() + merging.resend_stalled()
    finally:
        dispatch.advance_all_running()
    return found


def _live():
    return registry.live()


def live_clusters() -> int:
    return _live().count()


def live_workers() -> int:
    """How many agents the live clusters can run at once."""
    return sum(_live().values_list("workers", flat=True))
