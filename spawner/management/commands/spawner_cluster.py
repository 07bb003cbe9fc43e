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
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, InterfaceError, connections

from spawner.engine import execution, housekeeping, lifecycle, queue, reaper, recovery, registry, webhooks
from spawner.errors import ActionRefused
from spawner.models import RunAttempt
from spawner.states import AttemptStatus

log = logging.getLogger(__name__)


# Two signals closer than this are one request (Ctrl-C reaches the cluster and `serve` forwards it too).
SAME_REQUEST_SECONDS = 1.0


class Command(BaseCommand):
    help = (
        "Start a qcluster with Spawner's reaper, named SPAWNER_CLUSTER_NAME (default host:pid). SIGTERM/Ctrl-C, "
        "or `--drain NAME` from anywhere that shares the database, drains: nothing new starts, running agents "
        "finish (up to SPAWNER_DRAIN_SECONDS), then it exits; a second signal hands the rest back at once."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--drain",
            metavar="NAME",
            help="Do not start a cluster: ask the live cluster NAME to drain and exit (as its page's button does).",
        )

    def handle(self, *args, **options):
        if options.get("drain") is not None:
            return self.ask_drain(options["drain"])
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
        try:
            name = lifecycle.cluster_begin(pid)
            registry.join(name=name, host=execution.HOST, pid=pid, workers=Conf.WORKERS)
        except (ValueError, registry.NameTaken) as exc:
            raise CommandError(f"spawner cluster not started: {exc}") from exc
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
        # Joining the registry above wrote its row; the first beat after q2 is up says "ready"
        # (what `ensure_cluster` waits for). A peer's reaper that ticks in
        # the few ms between our pusher's first take and this beat resends that attempt once: a no-op.
        asked = self.step(pid, Conf.WORKERS)
        self.stdout.write(
            f"spawner cluster {name} (pid {pid}, {registry.version()}): {Conf.WORKERS} workers, "
            f"lease {settings.SPAWNER['LEASE_SECONDS']} s",
            ending="\n",
        )
        self.stdout.flush()
        workers: set[int] = set()
        drain_until = None
        try:
            while cluster.sentinel.is_alive():
                if (signals or asked) and drain_until is None:
                    drain_until = self.drain_begin(cluster, asked=asked and not signals)
                if drain_until is not None and (len(signals) > 1 or time.monotonic() >= drain_until):
                    break
                workers |= q2_children(cluster)
                asked = self.step(pid, Conf.WORKERS) or asked
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

    def step(self, pid: int, workers: int) -> bool:
        """One reaper step: say we are alive, reap, resend, advance. True when the registry says drain
        (an admin asked, or another cluster took this one's name while it was silent). A database that
        went away is said once, and that it is back; each step reconnects."""
        drain = False
        try:
            drain = registry.beat(
                name=lifecycle.CLUSTER_ID, host=execution.HOST, pid=pid, workers=workers, draining=lifecycle.draining()
            )
            if self.db_away_since is not None:
                log.warning("the database is back after %.1f s", time.monotonic() - self.db_away_since)
                self.db_away_since = None
            reaper.tick()
        except registry.NameLost as exc:
            self.stderr.write(f"spawner cluster {lifecycle.CLUSTER_ID}: {exc}; draining")
            drain = True
        except (DatabaseError, InterfaceError) as exc:
            if self.db_away_since is None:
                self.db_away_since = time.monotonic()
                log.warning("reaper step failed on the database (%s); trying again", exc)
            connections.close_all()
        except Exception:  # the reaper must outlive any one bad row
            log.exception("reaper step failed; trying again")
        return drain

    def ask_drain(self, name: str) -> None:
        from spawner import services

        try:
            row = services.cluster_drain(name=name, actor=None)
        except ActionRefused as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"cluster {row.name} ({row.host}, pid {row.pid}) will drain at its next reaper step")

    @staticmethod
    def pause(seconds: float, signals: list[float]) -> None:
        seen = len(signals)
        deadline = time.monotonic() + seconds
        while len(signals) == seen and time.monotonic() < deadline:
            time.sleep(0.05)

    def drain_begin(self, cluster, asked: bool = False) -> float:
        """Take nothing new; let running agents finish; give what we hold to whoever runs next."""
        lifecycle.drain_start()  # the pusher stops pulling, workers start nothing
        cluster.stop_event.set()  # q2 stops its workers as each becomes idle
        grace = settings.SPAWNER["DRAIN_SECONDS"]
        try:
            recovery.release_held(lifecycle.CLUSTER_ID)
        except DatabaseError:
            log.exception("could not release queued attempts; the next cluster's reaper will")
        why = "an admin asked it to drain" if asked else "signalled"
        self.stdout.write(
            f"spawner cluster {lifecycle.CLUSTER_ID} draining ({why}): agents may finish within {grace:.0f} s; "
            "signal again to stop now"
        )
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
            registry.leave(name=lifecycle.CLUSTER_ID, host=execution.HOST, pid=pid)
        except DatabaseError:
            log.exception("could not hand attempts back; the reaper will find them")
        took = time.monotonic() - started
        self.stdout.write(
            f"spawner cluster {lifecycle.CLUSTER_ID} (pid {pid}) stopped ({handed} handed back, {took:.1f} s)"
        )


def q2_children(cluster) -> set[int]:
    """The sentinel's own children (workers, pusher, monitor); agents are theirs, one level down."""
    if not (cluster.sentinel and cluster.sentinel.pid):
        return set()
    try:
        return {p.pid for p in psutil.Process(cluster.sentinel.pid).children()}
    except psutil.NoSuchProcess:
        return set()
