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

from spawner import dispatch, execution
from spawner.models import RunAttempt, WorkerHeartbeat
from spawner.states import AttemptStatus

log = logging.getLogger(__name__)


def reap_lost(now=None) -> int:
    """Mark attempts whose heartbeat is older than the lease as lost, then retry or fail their runs."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.SPAWNER["LEASE_SECONDS"])
    stale = RunAttempt.objects.select_related("run__agent_type", "run__batch").filter(
        status=AttemptStatus.RUNNING, heartbeat_at__lt=now - lease
    )
    reaped = 0
    for attempt in stale:
        silent = (now - attempt.heartbeat_at).total_seconds()
        if execution.attempt_finish(
            attempt,
            status=AttemptStatus.LOST,
            error=f"worker {attempt.host}:{attempt.worker_pid} stopped sending heartbeats "
            f"({silent:.0f} s > lease {lease.total_seconds():.0f} s)",
        ):
            reaped += 1
            _kill_orphan(attempt)
    return reaped


def _kill_orphan(attempt: RunAttempt) -> None:
    """The dead worker's agent process may still run here: stop its group."""
    if attempt.host != execution.HOST or not attempt.pgid:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(attempt.pgid, signal.SIGKILL)


def tick() -> int:
    found = reap_lost()
    dispatch.advance_all_running()
    return found


def cluster_heartbeat(pid: int, workers: int) -> None:
    now = timezone.now()
    WorkerHeartbeat.objects.update_or_create(
        host=execution.HOST, pid=pid, defaults={"seen_at": now, "workers": workers}
    )
    WorkerHeartbeat.objects.filter(seen_at__lt=now - timedelta(hours=1)).delete()


def cluster_gone(pid: int) -> None:
    WorkerHeartbeat.objects.filter(host=execution.HOST, pid=pid).delete()


def _live():
    lease = timedelta(seconds=settings.SPAWNER["LEASE_SECONDS"])
    return WorkerHeartbeat.objects.filter(seen_at__gte=timezone.now() - lease)


def live_clusters() -> int:
    return _live().count()


def live_workers() -> int:
    """How many agents the live clusters can run at once."""
    return sum(_live().values_list("workers", flat=True))
