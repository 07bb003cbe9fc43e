"""A django-q2 cluster plus the reaper: the worker side of Spawner."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import time

import psutil
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, InterfaceError, connections

from spawner.engine import execution, housekeeping, lifecycle, queue, reaper, recovery, webhooks
from spawner.models import RunAttempt
from spawner.states import AttemptStatus

log = logging.getLogger(__name__)


# Two signals closer than this are one request (Ctrl-C reaches the cluster and `serve` forwards it too).
SAME_REQUEST_SECONDS = 1.0


class Command(BaseCommand):
    help = (
        "Start a qcluster with Spawner's reaper. SIGTERM/Ctrl-C drains: nothing new starts, running agents "
        "finish (up to SPAWNER_DRAIN_SECONDS); a second signal hands the rest back at once."
    )

    def handle(self, *args, **options):
        from django_q.cluster import Cluster
        from django_q.conf import Conf

        # Workers reuse their connections across tasks (q2 closes stale ones around each task).
        db = connections["default"].settings_dict
        db["CONN_MAX_AGE"] = settings.SPAWNER["WORKER_CONN_MAX_AGE"]
        db["CONN_HEALTH_CHECKS"] = True
        # Load what workers run, then freeze it, so forked workers share these pages
        # instead of copying them as the garbage collector touches them.
        import spawner.engine.tasks  # noqa: F401

        pid = os.getpid()
        lifecycle.cluster_begin(pid)
        try:  # a previous instance with this name (same host and pid after a restart) may have held attempts
            recovery.release_held(lifecycle.CLUSTER_ID)
        except DatabaseError:
            log.exception("could not release what a previous instance held; the reaper will find it")
        try:  # agents of this host left running by a cluster that was killed: nobody watches them
            recovery.kill_orphans()
        except DatabaseError:
            log.exception("could not look for orphaned agents; their launchers fence them")
        connections.close_all()  # never share a connection with the forked sentinel
        gc.collect()
        gc.freeze()
        signals: list[float] = []
        cluster = Cluster()
        # Replace q2's handlers: its graceful stop would start what it prefetched and wait without limit.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.signalled(signals))
        cluster.start()
        # Started after the fork above: webhooks go out from this process, never from a worker.
        hooks, hooks_stop = webhooks.start_delivery_thread()
        # With Redis: what a commit owed the broker and could not send (the broker was down, its process died).
        _, outbox_stop = queue.start_sender_thread()
        # Worktrees nobody needs any more, a bounded number every SPAWNER_GC_SECONDS (spawner_gc by hand).
        _, gc_stop = housekeeping.start_gc_thread()
        # The first beat says "ready" (what `ensure_cluster` waits for). A peer's reaper that ticks in
        # the few ms between our pusher's first take and this beat resends that attempt once: a no-op.
        self.step(pid, Conf.WORKERS)
        self.stdout.write(
            f"spawner cluster {pid}: {Conf.WORKERS} workers, lease {settings.SPAWNER['LEASE_SECONDS']} s", ending="\n"
        )
        self.stdout.flush()
        workers: set[int] = set()
        drain_until = None
        try:
            while cluster.sentinel.is_alive():
                if signals and drain_until is None:
                    drain_until = self.drain_begin(cluster)
                if drain_until is not None and (len(signals) > 1 or time.monotonic() >= drain_until):
                    break
                workers |= q2_children(cluster)
                self.step(pid, Conf.WORKERS)
                self.pause(0.2 if drain_until else settings.SPAWNER["REAPER_SECONDS"], signals)
        finally:
            hooks_stop.set()
            outbox_stop.set()
            gc_stop.set()
            self.shutdown(cluster, pid, workers | q2_children(cluster))
            hooks.join(timeout=settings.SPAWNER["WEBHOOK_TIMEOUT_SECONDS"] * 3)

    @staticmethod
    def signalled(signals: list[float]) -> None:
        now = time.monotonic()
        if not signals or now - signals[-1] >= SAME_REQUEST_SECONDS:
            signals.append(now)

    db_away_since: float | None = None

    def step(self, pid: int, workers: int) -> None:
        """One reaper step: say we are alive, reap, resend, advance. A database that went away is
        said once, and that it is back; each step reconnects."""
        try:
            reaper.cluster_heartbeat(pid, workers)
            if self.db_away_since is not None:
                log.warning("the database is back after %.1f s", time.monotonic() - self.db_away_since)
                self.db_away_since = None
            reaper.tick()
        except (DatabaseError, InterfaceError) as exc:
            if self.db_away_since is None:
                self.db_away_since = time.monotonic()
                log.warning("reaper step failed on the database (%s); trying again", exc)
            connections.close_all()
        except Exception:  # the reaper must outlive any one bad row
            log.exception("reaper step failed; trying again")

    @staticmethod
    def pause(seconds: float, signals: list[float]) -> None:
        seen = len(signals)
        deadline = time.monotonic() + seconds
        while len(signals) == seen and time.monotonic() < deadline:
            time.sleep(0.05)

    def drain_begin(self, cluster) -> float:
        """Take nothing new; let running agents finish; give what we hold to whoever runs next."""
        lifecycle.drain_start()  # the pusher stops pulling, workers start nothing
        cluster.stop_event.set()  # q2 stops its workers as each becomes idle
        grace = settings.SPAWNER["DRAIN_SECONDS"]
        try:
            recovery.release_held(lifecycle.CLUSTER_ID)
        except DatabaseError:
            log.exception("could not release queued attempts; the next cluster's reaper will")
        self.stdout.write(f"spawner cluster draining: agents may finish within {grace:.0f} s; signal again to stop now")
        self.stdout.flush()
        return time.monotonic() + grace

    def shutdown(self, cluster, pid: int, workers: set[int]) -> None:
        """Stop q2's processes, hand back the agents still running (no retry spent), and leave."""
        started = time.monotonic()
        procs = []
        if cluster.sentinel and cluster.sentinel.is_alive():
            with contextlib.suppress(psutil.NoSuchProcess):
                procs = psutil.Process(cluster.sentinel.pid).children()
                procs.append(psutil.Process(cluster.sentinel.pid))
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        if cluster.sentinel:
            cluster.sentinel.join(timeout=5)
        handed = 0
        try:
            running = RunAttempt.objects.select_related("run__agent_type", "run__batch").filter(
                status=AttemptStatus.RUNNING, host=execution.HOST, worker_pid__in=workers
            )
            handed = recovery.hand_back(list(running), settings.SPAWNER["KILL_GRACE_SECONDS"])
            recovery.release_held(lifecycle.CLUSTER_ID)
            reaper.cluster_gone(pid)
        except DatabaseError:
            log.exception("could not hand attempts back; the reaper will find them")
        self.stdout.write(f"spawner cluster {pid} stopped ({handed} handed back, {time.monotonic() - started:.1f} s)")


def q2_children(cluster) -> set[int]:
    """The sentinel's own children (workers, pusher, monitor); agents are theirs, one level down."""
    if not (cluster.sentinel and cluster.sentinel.pid):
        return set()
    try:
        return {p.pid for p in psutil.Process(cluster.sentinel.pid).children()}
    except psutil.NoSuchProcess:
        return set()
