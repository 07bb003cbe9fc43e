"""Recovery: no message a dead cluster holds strands a run, a stopping cluster drains, a finished
agent is harvested, not re-run.

Who holds a queued attempt. q2's pusher prefetches messages into its cluster's memory (and, with the
ORM broker, locks them for q2's retry window, hours; Redis pops them for good). So the pusher's
broker (`spawner.engine.broker`) stamps each attempt it takes with its cluster's name, `held_by`
(`SPAWNER_CLUSTER_NAME`, else "host:pid"), before any worker can see it. Every cluster beats in the
registry (`WorkerHeartbeat`, `spawner.engine.registry`); the reaper sends a queued attempt again
when its holder stopped beating for a lease, once (a conditional update clears `held_by`), and a
live cluster stamps it anew when it takes it. A healthy cluster with a backlog holds its prefetched
attempts and beats, so they are never duplicated. An attempt no cluster holds (its message was lost
between Redis's pop and the stamp, or never sent) is sent again only when the broker has nothing
waiting and at most once per lease. A duplicate that does arrive is a no-op: claims are conditional
updates.

Draining. The first SIGTERM/SIGINT to a cluster, or an admin's drain request in its registry row
(seen at its next reaper step), sets a flag its forked processes share: the pusher stops pulling,
workers take nothing new (an attempt they are handed stays queued and is released), running agents
finish. What is left when the grace ends is handed back: the agent is stopped and its attempt ends
`handed_back`, which spends no retry and opens no escalation.

Harvesting. The runner's shim records each agent's exit code beside its log. An attempt whose
worker is gone (killed, or its cluster stopped) is first stopped (its whole group, so the record
can no longer change), then its record decides: the agent ended on its own -> its real result, no
new attempt; no record -> lost (or handed back), as before. An agent still running when its worker's
lease runs out is killed and retried rather than adopted: the reaper does not supervise processes.

What is promised: at-least-once with fencing, never two copies at once. A run may be executed again
(its worker died or was cut off while the agent ran), but a new attempt never starts while an old
one's agent still runs, on any machine:
- Each agent has a lease file beside its log whose mtime is the time of its worker's last heartbeat
  the database accepted (`runners.command.renew_lease`, at each beat in `execution._supervise`). The
  agent's launcher stops the whole group once that file is older than the fence time
  (SPAWNER_FENCE_SECONDS, 0.6 x the lease by default), recording "fenced" instead of an exit code:
  the worker was killed, stopped (SIGSTOP), or cut off from the database. The worker fences a model
  agent (a thread, no launcher) the same way.
- The reaper takes an attempt over only once its heartbeat is older than the full lease; an attempt
  of another machine only when no cluster beats there any more (that machine's own reaper otherwise
  stops the group and reads the exit record). By then its agent has been fenced for 0.4 x the lease.
  (This assumes the machines' clocks agree to well within that margin, and that the launcher itself
  runs: a frozen machine's agents are frozen too, and are fenced within 0.1 s of its thawing.)
- Late answers change nothing: every write of a worker is a conditional update on the attempt.
- A cluster that starts stops the agents of its machine that no live worker supervises (its previous
  instance was killed), after checking that the process group is still the attempt's (`owns_group`).
- An agent that ends on its own while its worker is dead (within the fence time) is harvested: its
  real result, not run again, so a short agent runs exactly once across a worker's crash.
- A process stopped in the middle of a transaction holds its row locks until PostgreSQL ends its
  session: `idle_in_transaction_session_timeout` (settings, a sixth of the lease) bounds that.
A database blip (restart, dropped connections) is not a lost worker: supervision keeps the agent,
reconnects on the next step and records the end once the database is back (`execution._Database`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from datetime import timedelta
from pathlib import Path

import psutil
from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.db.models import Q
from django.utils import timezone

from spawner.core import recovery as rules
from spawner.engine import execution, lifecycle, queue
from spawner.models import RunAttempt, WorkerHeartbeat
from spawner.runners.command import owns_group, read_exit_record, stop_groups, was_fenced
from spawner.states import AttemptStatus

log = logging.getLogger(__name__)
ATTEMPT_TASK = "spawner.engine.tasks.execute_attempt"


def _lease() -> timedelta:
    return timedelta(seconds=settings.SPAWNER["LEASE_SECONDS"])


def live_cluster_ids() -> set[str]:
    """The names of the clusters that beat within the lease (what `held_by` records)."""
    seen = WorkerHeartbeat.objects.filter(seen_at__gte=timezone.now() - _lease())
    return set(seen.values_list("name", flat=True))


# --- holding ----------------------------------------------------------------------------


def stamp_held(tasks) -> int:
    """In the pusher: mark the attempts of messages just taken from the broker as held by this cluster."""
    from django_q.signing import SignedPackage

    ids = []
    for _ack, payload in tasks or ():
        try:
            task = SignedPackage.loads(payload)
        except Exception:  # noqa: BLE001 - q2 reports bad messages itself
            continue
        if task.get("func") == ATTEMPT_TASK and task.get("args"):
            ids.append(task["args"][0])
    if not ids or not lifecycle.CLUSTER_ID:
        return 0
    try:
        return RunAttempt.objects.filter(id__in=ids, status=AttemptStatus.QUEUED).update(held_by=lifecycle.CLUSTER_ID)
    except DatabaseError:  # unstamped, the reaper's fallback still finds it; never lose the message here
        log.exception("could not record which cluster holds attempts %s", ids)
        close_old_connections()
        return 0


def _resend(attempt: RunAttempt, *, held_by: str, sent_at, now) -> bool:
    """Claim the resend with a conditional update, so two reapers do not both send it."""
    claimed = RunAttempt.objects.filter(
        id=attempt.id, status=AttemptStatus.QUEUED, held_by=held_by, sent_at=sent_at
    ).update(held_by="", sent_at=now, heartbeat_at=None)
    if claimed:
        queue.enqueue_attempt(attempt, attempt.run.batch_id)
    return bool(claimed)


def release_held(cluster: str, now=None) -> int:
    """A stopping cluster gives back the queued attempts it holds (prefetched, or waited on by a worker)."""
    now = now or timezone.now()
    held = RunAttempt.objects.select_related("run").filter(status=AttemptStatus.QUEUED, held_by=cluster)
    return sum(_resend(a, held_by=cluster, sent_at=a.sent_at, now=now) for a in held)


_broker = None


def broker_waiting() -> int:
    """Messages waiting in the broker, not yet taken by any cluster."""
    global _broker
    if _broker is None:
        from django_q.brokers import get_broker

        _broker = get_broker()
    return _broker.queue_size() or 0


def resend_stranded(now=None) -> int:
    """Queued attempts whose message a dead cluster held, or that no cluster holds and the broker lost."""
    now = now or timezone.now()
    lease = _lease()
    queued = RunAttempt.objects.select_related("run").filter(status=AttemptStatus.QUEUED)
    live = live_cluster_ids()
    sent = 0
    for attempt in queued.exclude(held_by="").exclude(held_by__in=live):
        if rules.holder_dead(attempt.held_by, live):
            sent += _resend(attempt, held_by=attempt.held_by, sent_at=attempt.sent_at, now=now)
    cutoff = now - lease
    # An attempt whose message is still owed (send_due) never reached the broker: the outbox sends it.
    unheld = queued.filter(held_by="", heartbeat_at__isnull=True, send_due__isnull=True).filter(
        Q(sent_at__lt=cutoff) | Q(sent_at__isnull=True, queued_at__lt=cutoff)
    )
    if unheld.exists():
        waiting = broker_waiting()
        for attempt in unheld:
            idle = (now - (attempt.sent_at or attempt.queued_at)).total_seconds()
            if rules.unheld_stranded(idle_seconds=idle, lease=lease.total_seconds(), broker_waiting=waiting):
                sent += _resend(attempt, held_by="", sent_at=attempt.sent_at, now=now)
    return sent


# --- harvesting and handing back ----------------------------------------------------------


def log_path_of(attempt: RunAttempt) -> Path:
    return Path(attempt.log_path) if attempt.log_path else execution.attempt_paths(attempt)[0]


def kill_orphans() -> int:
    """At a cluster's start: stop the agents of this host that no live worker supervises (their cluster
    was killed; their launchers fence them too, unless those were stopped with it). A group is killed
    only while it is still the attempt's (a pid may have been reused since)."""
    running = RunAttempt.objects.select_related("run").filter(
        status=AttemptStatus.RUNNING, host=lifecycle.HOST, pgid__isnull=False
    )
    killed = 0
    for attempt in running:
        if _supervised(attempt.worker_pid) or not owns_group(attempt.pgid, log_path_of(attempt)):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(attempt.pgid, signal.SIGKILL)
            killed += 1
            log.warning("stopped orphaned agent of attempt %s (process group %s)", attempt.id, attempt.pgid)
    return killed


def _supervised(worker_pid: int | None) -> bool:
    """A worker of a cluster runs with this pid on this machine."""
    try:
        return "spawner_cluster" in " ".join(psutil.Process(worker_pid).cmdline())
    except (psutil.Error, ValueError, TypeError):
        return False


def finish_unwatched(attempt: RunAttempt, *, otherwise: str, error: str) -> str | None:
    """End an attempt whose worker is gone (its process group already stopped): the agent's own end if
    its exit record says it ended, else `otherwise`. The status recorded, or None if it was stale."""
    log_path = log_path_of(attempt)
    code = read_exit_record(log_path)
    if code is None and (fenced := was_fenced(log_path)):
        error = f"{error}; its launcher stopped the agent ({fenced})"
    if code is not None and _in_workspace(attempt):
        # Its worker died somewhere between the agent's end and the attempt's: whether its changes were
        # committed, scope-checked and gated is not known here, so nothing may call it done. It ends as
        # if it had not finished (lost, or handed back) and runs again from a fresh worktree.
        code = None
        error = f"{error}; the agent had ended, but its worktree's changes were not committed and checked"
    if code is None:
        return otherwise if execution.attempt_finish(attempt, status=otherwise, error=error) else None
    status, failure = rules.harvested_status(code, attempt.run.agent_type.exit_codes)
    harvested = f"{attempt.host}:{attempt.worker_pid}"
    if not execution.attempt_finish(attempt, status=status, exit_code=code, error=failure, harvested_from=harvested):
        return None
    return status


def _in_workspace(attempt: RunAttempt) -> bool:
    return RunAttempt.objects.filter(id=attempt.id).exclude(worktree="").exists()


def hand_back(attempts: list[RunAttempt], grace: float) -> int:
    """Stop these agents (their workers are already gone) and give their runs a fresh attempt."""
    stop_groups([a.pgid for a in attempts if a.pgid and a.host == execution.HOST], grace)
    handed = 0
    for attempt in attempts:
        try:
            status = finish_unwatched(
                attempt, otherwise=AttemptStatus.HANDED_BACK, error="handed back: the cluster running it stopped"
            )
        except Exception:  # one attempt that cannot be recorded must not keep the others
            log.exception("could not hand attempt %s back", attempt.id)
            continue
        handed += status == AttemptStatus.HANDED_BACK
    return handed
