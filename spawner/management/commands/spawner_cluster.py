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
from django.db import DatabaseError, connections
from django.utils import timezone

from spawner.engine import execution, reaper, webhooks
from spawner.models import RunAttempt
from spawner.states import AttemptStatus

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Start a qcluster with Spawner's reaper; Ctrl-C hands running attempts back and stops."

    def handle(self, *args, **options):
        from django_q.cluster import Cluster
        from django_q.conf import Conf

        connections.close_all()  # never share a connection with the forked sentinel
        # Workers reuse their connections across tasks (q2 closes stale ones around each task).
        db = connections["default"].settings_dict
        db["CONN_MAX_AGE"] = settings.SPAWNER["WORKER_CONN_MAX_AGE"]
        db["CONN_HEALTH_CHECKS"] = True
        # Load what workers run, then freeze it, so forked workers share these pages
        # instead of copying them as the garbage collector touches them.
        import spawner.engine.tasks  # noqa: F401

        gc.collect()
        gc.freeze()
        stopping = []
        cluster = Cluster()
        # Replace q2's handlers: its graceful stop waits for every running agent to end.
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
        signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
        cluster.start()
        # Started after the fork above: webhooks go out from this process, never from a worker.
        hooks, hooks_stop = webhooks.start_delivery_thread()
        pid = os.getpid()
        self.stdout.write(
            f"spawner cluster {pid}: {Conf.WORKERS} workers, lease {settings.SPAWNER['LEASE_SECONDS']} s", ending="\n"
        )
        self.stdout.flush()
        interval = settings.SPAWNER["REAPER_SECONDS"]
        try:
            while not stopping and cluster.sentinel.is_alive():
                try:
                    reaper.cluster_heartbeat(pid, Conf.WORKERS)
                    reaper.tick()
                except DatabaseError:
                    log.exception("reaper step failed; trying again")
                    connections.close_all()
                except Exception:  # the reaper must outlive any one bad row
                    log.exception("reaper step failed; trying again")
                deadline = time.monotonic() + interval
                while not stopping and time.monotonic() < deadline:
                    time.sleep(0.05)
        finally:
            hooks_stop.set()
            self.shutdown(cluster, pid)
            hooks.join(timeout=settings.SPAWNER["WEBHOOK_TIMEOUT_SECONDS"] * 3)

    def shutdown(self, cluster, pid: int) -> None:
        """Kill the workers, hand their running attempts back (lost, so they retry), and leave."""
        workers = []
        if cluster.sentinel and cluster.sentinel.pid:
            with contextlib.suppress(psutil.NoSuchProcess):
                workers = psutil.Process(cluster.sentinel.pid).children(recursive=True)
        worker_pids = [p.pid for p in workers]
        if cluster.sentinel.is_alive():
            workers.append(psutil.Process(cluster.sentinel.pid))
        for proc in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        cluster.sentinel.join(timeout=5)
        try:
            running = RunAttempt.objects.select_related("run__agent_type", "run__batch").filter(
                status=AttemptStatus.RUNNING, host=execution.HOST, worker_pid__in=worker_pids
            )
            for attempt in running:
                if attempt.pgid:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(attempt.pgid, signal.SIGKILL)
                execution.attempt_finish(attempt, status=AttemptStatus.LOST, error="the cluster running it was stopped")
            release_prefetched()
            reaper.cluster_gone(pid)
        except DatabaseError:
            log.exception("could not hand attempts back; the reaper will find them")
        self.stdout.write(f"spawner cluster {pid} stopped")


def release_prefetched() -> int:
    """Attempts the dead cluster had pulled but not started: make the ORM broker deliver them again.

    Safe because attempts are fenced: if another worker already holds one, the copy is a no-op.
    """
    if "orm" not in settings.Q_CLUSTER:
        return 0
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    queued = set(RunAttempt.objects.filter(status=AttemptStatus.QUEUED).values_list("id", flat=True))
    released = 0
    now = timezone.now()
    for row in OrmQ.objects.filter(lock__gt=now):
        try:
            task = SignedPackage.loads(row.payload)
        except Exception:  # noqa: BLE001 - not ours to judge
            continue
        if task.get("func") == "spawner.engine.tasks.execute_attempt" and task["args"][0] in queued:
            released += OrmQ.objects.filter(id=row.id).update(lock=now)
    return released
