"""Start a spawner cluster for this process when none is alive, and stop it after."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta

import psutil
from django.conf import settings
from django.utils import timezone

from spawner.engine import execution
from spawner.models import WorkerHeartbeat


class ClusterStartFailed(Exception):
    pass


def ensure_cluster(timeout: float = 60) -> subprocess.Popen | None:
    """None if a cluster is already alive; else the one started here (stop it with `stop`), returned
    once it is ready to take work: its first heartbeat, which the cluster writes only after its workers
    and its broker's pusher are up. A batch launched after this call starts its clock on a cluster that
    can take it at once, so the start-up never counts in its wall time."""
    if alive():
        return None
    proc = subprocess.Popen(
        [sys.executable, str(settings.BASE_DIR / "manage.py"), "spawner_cluster"],
        stdin=subprocess.DEVNULL,  # never the caller's (an MCP server's stdin is its protocol)
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while not ready(proc):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise ClusterStartFailed(f"could not start a spawner cluster (exit code {proc.returncode})")
        time.sleep(0.1)
    return proc


def alive() -> bool:
    """A cluster can take work: a heartbeat within the lease, from a process that still exists when it
    is on this machine (one killed here a moment ago leaves its row behind, and nothing would run)."""
    lease = timedelta(seconds=settings.SPAWNER["LEASE_SECONDS"])
    rows = WorkerHeartbeat.objects.filter(seen_at__gte=timezone.now() - lease).values_list("host", "pid")
    return any(host != execution.HOST or psutil.pid_exists(pid) for host, pid in rows)


def ready(proc: subprocess.Popen) -> bool:
    """This cluster (not another one) has said it is alive: its own WorkerHeartbeat row, past starting."""
    mine = WorkerHeartbeat.objects.filter(host=execution.HOST, pid=proc.pid)
    return mine.exclude(state=WorkerHeartbeat.State.STARTING).exists()


def stop(proc: subprocess.Popen | None) -> None:
    """Ask the cluster to stop: it drains (running agents may finish), then hands the rest back."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    limit = settings.SPAWNER["DRAIN_SECONDS"] + settings.SPAWNER["KILL_GRACE_SECONDS"] + 30
    try:
        proc.wait(timeout=limit)
    except KeyboardInterrupt:  # a second Ctrl-C: the cluster got it too and hands back what is left now
        proc.terminate()
        _wait_or_kill(proc, settings.SPAWNER["KILL_GRACE_SECONDS"] + 30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wait_or_kill(proc: subprocess.Popen, timeout: float) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
