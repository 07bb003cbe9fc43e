"""The cluster registry (`WorkerHeartbeat`): each cluster joins it under its name, beats every reaper
step (workers busy and total, running or draining), notices there that an admin asked it to drain,
and leaves it when it stops. Its name is what `held_by` and `RunAttempt.cluster` record."""

from __future__ import annotations

import functools
import subprocess
from datetime import timedelta
from importlib import metadata

import psutil
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from spawner.models import RunAttempt, WorkerHeartbeat
from spawner.states import AttemptStatus

# Rows of clusters that stopped without leaving (killed) are kept this long for the clusters page.
FORGET_AFTER = timedelta(hours=1)


class NameTaken(Exception):
    """Another live cluster already has this name."""


class NameLost(Exception):
    """This cluster's row now belongs to another cluster with its name (it was silent past its lease)."""


def lease() -> timedelta:
    return timedelta(seconds=settings.SPAWNER["LEASE_SECONDS"])


def live():
    """Registry rows of clusters that beat within the lease."""
    return WorkerHeartbeat.objects.filter(seen_at__gte=timezone.now() - lease())


@functools.cache
def version() -> str:
    """Spawner's package version, plus the git commit of its checkout when there is one."""
    try:
        found = metadata.version("spawner")
    except metadata.PackageNotFoundError:
        found = "unknown"
    try:
        commit = subprocess.run(
            ["git", "-C", str(settings.BASE_DIR), "rev-parse", "--short=10", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return found
    if commit.returncode == 0 and commit.stdout.strip():
        return f"{found}+{commit.stdout.strip()}"
    return found


def _holder_alive(row: WorkerHeartbeat, host: str) -> bool:
    """A row that still speaks for a running cluster: beating within the lease and, on this machine,
    its process still exists (one killed here a moment ago leaves its row behind)."""
    if row.seen_at < timezone.now() - lease():
        return False
    return row.host != host or psutil.pid_exists(row.pid)


def join(*, name: str, host: str, pid: int, workers: int) -> WorkerHeartbeat:
    """Enter the registry under `name`; raise NameTaken when a live cluster already has it. A dead
    cluster's row with this name (or with this host and pid) is replaced: what it held is this one's
    to release."""
    now = timezone.now()
    try:
        with transaction.atomic():
            row = WorkerHeartbeat.objects.select_for_update().filter(name=name).first()
            if row is not None and (row.host, row.pid) != (host, pid) and _holder_alive(row, host):
                silent = (now - row.seen_at).total_seconds()
                raise NameTaken(
                    f"a cluster named {name!r} is already running ({row.host}, pid {row.pid}, last heartbeat "
                    f"{silent:.0f} s ago): start this one with another SPAWNER_CLUSTER_NAME, or stop that one "
                    f"first (a cluster that died is forgotten {lease().total_seconds():.0f} s after its last heartbeat)"
                )
            WorkerHeartbeat.objects.filter(name=name).delete()
            WorkerHeartbeat.objects.filter(host=host, pid=pid).delete()
            return WorkerHeartbeat.objects.create(
                name=name,
                host=host,
                pid=pid,
                workers=workers,
                version=version(),
                seen_at=now,
                state=WorkerHeartbeat.State.STARTING,  # ready at its first beat
            )
    except IntegrityError as exc:  # another cluster joined under this name at the same moment
        raise NameTaken(f"a cluster named {name!r} joined at the same moment: use another name") from exc


def beat(*, name: str, host: str, pid: int, workers: int, draining: bool) -> bool:
    """Say this cluster is alive (its first beat: ready to take work), what it runs and whether it
    drains. True when an admin asked it to drain. Raises NameLost when another cluster took its name
    meanwhile."""
    now = timezone.now()
    busy = RunAttempt.objects.filter(status=AttemptStatus.RUNNING, cluster=name).count()
    state = WorkerHeartbeat.State.DRAINING if draining else WorkerHeartbeat.State.RUNNING
    mine = WorkerHeartbeat.objects.filter(name=name, host=host, pid=pid)
    if not mine.update(seen_at=now, workers=workers, busy=busy, state=state):
        # Our row is gone (forgotten after a long silence): take it again unless another cluster has the name.
        try:
            with transaction.atomic():
                WorkerHeartbeat.objects.create(
                    name=name,
                    host=host,
                    pid=pid,
                    workers=workers,
                    busy=busy,
                    state=state,
                    version=version(),
                    seen_at=now,
                )
        except IntegrityError as exc:
            raise NameLost(f"another cluster runs under the name {name!r} now") from exc
    WorkerHeartbeat.objects.filter(seen_at__lt=now - FORGET_AFTER).delete()
    return mine.filter(drain_requested_at__isnull=False).exists()


def leave(*, name: str, host: str, pid: int) -> None:
    WorkerHeartbeat.objects.filter(name=name, host=host, pid=pid).delete()


def request_drain(name: str, *, by: str) -> WorkerHeartbeat | None:
    """Flag the live cluster `name` to drain at its next reaper step; None if no live cluster has
    that name. Asking again changes nothing."""
    row = live().filter(name=name).first()
    if row is None:
        return None
    if row.drain_requested_at is None:
        WorkerHeartbeat.objects.filter(id=row.id, drain_requested_at__isnull=True).update(
            drain_requested_at=timezone.now(), drain_requested_by=by
        )
        row.refresh_from_db()
    return row
