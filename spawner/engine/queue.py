"""Hand work to the django-q2 broker, through an outbox: nothing owed to the broker is lost to a
broker that is down, or to a process that dies between its commit and its send.

With the ORM broker (the embedded default) a message is a row in the same database: it is written
in the transaction that makes it needed, and appears exactly when that commit does. Nothing more is
needed, and nothing more is done.

With Redis, the row that needs a message says so in the same transaction: a queued attempt's
`send_due`, a workspace's `merge_send_due` (the merge queue's task). Right after the commit the
committing process sends what that transaction owes, all of it at once, and clears the field (the
acknowledgement: one UPDATE for the lot). If the broker is down, the rows are marked due again
shortly and the committing process goes on: a launch during a Redis outage is stored and starts when
Redis is back, never a raw ConnectionError. Each cluster's sender loop (`sender_loop`, a thread of
`spawner_cluster`) sends what is still owed once it is due: after a failed send, or when the
committing process died before sending (after OUTBOX_GRACE_SECONDS, so a healthy commit is never
sent twice). Loops claim rows with a conditional update (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so
two clusters do not both send one; a duplicate that still happens is harmless, since claims of
attempts are fenced and the merge queue holds a lock.

Why fields and not an outbox table: the attempt row is the unit of work already, and its status says
whether a message is still needed (a cancelled or started attempt needs none); the field rides in the
INSERT that creates the attempt, so the hot path writes no extra row, and the acknowledgement is one
statement per commit. The merge queue's task is "run this batch's queue", so one due time per batch
folds any number of requests into one send.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connections, transaction
from django.utils import timezone

from spawner.core import outbox, words
from spawner.engine import wake
from spawner.models import RunAttempt, Workspace
from spawner.states import AttemptStatus

log = logging.getLogger(__name__)

EXECUTE = "spawner.engine.tasks.execute_attempt"
MERGE = "spawner.engine.tasks.merge_queue"
# The loop sends at most this many rows per round (then goes again at once).
ROUND = 500


def orm_broker() -> bool:
    return settings.Q_CLUSTER.get("orm") == "default"


def timing() -> outbox.Timing:
    conf = settings.SPAWNER
    return outbox.Timing(
        grace=conf["OUTBOX_GRACE_SECONDS"],
        retry=conf["OUTBOX_RETRY_SECONDS"],
        retry_max=conf["OUTBOX_RETRY_MAX_SECONDS"],
        claim=max(30.0, conf["OUTBOX_GRACE_SECONDS"]),
    )


def attempt_due(now: datetime | None = None) -> datetime | None:
    """`send_due` for an attempt being written: None with the ORM broker (its message is a row)."""
    if orm_broker():
        return None
    return outbox.due_on_write(now or timezone.now(), timing())


# --- the broker -------------------------------------------------------------------------------

_broker = None
_broker_pid = None


def broker():
    """One broker per process (q2 builds a new one, with a new Redis connection, for each task);
    a forked child makes its own."""
    global _broker, _broker_pid
    if _broker is None or _broker_pid != os.getpid():
        from django_q.brokers import get_broker

        _broker, _broker_pid = get_broker(), os.getpid()
    return _broker


def reset_broker() -> None:
    """Forget this process's broker (its configuration changed)."""
    global _broker
    _broker = None


def _send_attempt(attempt_id: int, batch_id: int) -> None:
    from django_q.tasks import async_task

    async_task(EXECUTE, attempt_id, task_name=f"attempt-{attempt_id}", group=f"batch-{batch_id}", broker=broker())


def _send_merge(batch_id: int) -> None:
    from django_q.tasks import async_task

    name = f"merge-{batch_id}-{time.monotonic_ns()}"
    async_task(MERGE, batch_id, task_name=name, group=f"batch-{batch_id}", broker=broker())


# --- what a transaction owes ------------------------------------------------------------------


class _Owed:
    """What one transaction owes the broker; sent together once it commits."""

    def __init__(self) -> None:
        self.attempts: dict[int, int] = {}  # attempt id -> batch id
        self.merges: set[int] = set()  # batch ids

    def send(self) -> None:
        send_committed(self.attempts, self.merges)


_local = threading.local()


def _owed() -> tuple[_Owed, bool]:
    """This transaction's list (made and hooked on its commit if new); True if there is no
    transaction and the caller must send at once."""
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        return _Owed(), True
    owed = getattr(_local, "owed", None)
    # A rolled-back transaction (or savepoint) dropped its hook: start a new list.
    if owed is None or not any(
        getattr(hook, "__self__", None) is owed for _ids, hook, _robust in connection.run_on_commit
    ):
        owed = _local.owed = _Owed()
        transaction.on_commit(owed.send, robust=True)  # never raise into the caller: the commit happened
    return owed, False


def enqueue_attempt(attempt: RunAttempt, batch_id: int) -> None:
    """Hand the attempt to a q2 worker once the transaction that queued it commits.

    Call it inside that transaction, with the attempt written with `send_due=attempt_due()` (else it
    is written here); outside one, it is sent at once.
    """
    if orm_broker():
        _send_attempt(attempt.id, batch_id)
        wake.after_commit(wake.DISPATCH)  # the pushers need not wait for their poll
        return
    if attempt.send_due is None:
        attempt.send_due = attempt_due()
        RunAttempt.objects.filter(id=attempt.id).update(send_due=attempt.send_due)
    owed, now = _owed()
    owed.attempts[attempt.id] = batch_id
    if now:
        owed.send()


def enqueue_merge(batch_id: int) -> None:
    """Run the batch's merge queue once the current transaction commits (at once outside one)."""
    if orm_broker():
        _send_merge(batch_id)
        wake.after_commit(wake.DISPATCH)
        return
    Workspace.objects.filter(batch_id=batch_id).update(merge_send_due=attempt_due())
    owed, now = _owed()
    owed.merges.add(batch_id)
    if now:
        owed.send()


def send_committed(attempts: dict[int, int], merges: set[int]) -> None:
    """Right after the commit: send what it owes, acknowledge what the broker took, mark the rest due
    soon. Never raises: what is not acknowledged here is the sender loop's."""
    started = timezone.now()
    t = timing()
    # A row a loop claimed meanwhile (this process was slower than the grace) is the loop's to acknowledge.
    ours = started + timedelta(seconds=t.grace)
    items = list(attempts.items())
    done = outbox.send_round(items, lambda item: _send_attempt(*item))
    merged = outbox.send_round(sorted(merges), _send_merge) if merges else outbox.Round((), (), False)
    if done.broker_down or merged.broker_down:
        log.warning(
            "the broker is unreachable: %s and %s are stored and start when it is back",
            words.plural(len(done.retry), "run"),
            words.plural(len(merged.retry), "merge queue"),
        )
    try:
        if done.sent:
            RunAttempt.objects.filter(id__in=[i for i, _ in done.sent], send_due__lte=ours).update(send_due=None)
        if merged.sent:
            Workspace.objects.filter(batch_id__in=merged.sent, merge_send_due__lte=ours).update(merge_send_due=None)
        again = outbox.due_after_failure(timezone.now(), 1, t)
        if done.retry:
            RunAttempt.objects.filter(id__in=[i for i, _ in done.retry], send_due__lte=ours).update(send_due=again)
        if merged.retry:
            Workspace.objects.filter(batch_id__in=merged.retry, merge_send_due__lte=ours).update(merge_send_due=again)
    except DatabaseError:  # still owed as written: the loop sends them after the grace (a duplicate is a no-op)
        log.exception("could not record which messages the broker took")


# --- the sender loop (each cluster) -----------------------------------------------------------


def send_owed(now: datetime | None = None, failures: int = 0) -> tuple[int, bool]:
    """One round: claim what is due, send it, acknowledge. (messages sent, broker unreachable)."""
    now = now or timezone.now()
    t = timing()
    until = outbox.claimed_until(now, t)
    due = RunAttempt.objects.filter(send_due__lte=now)
    # Started (a copy arrived), cancelled or ended: nothing to send any more.
    due.exclude(status=AttemptStatus.QUEUED).update(send_due=None)
    with transaction.atomic():
        rows = list(
            due.filter(status=AttemptStatus.QUEUED)
            .select_for_update(skip_locked=True, of=("self",))
            .order_by("send_due")
            .values_list("id", "run__batch_id")[:ROUND]
        )
        if rows:
            RunAttempt.objects.filter(id__in=[i for i, _ in rows], send_due__lte=now).update(send_due=until)
    done = outbox.send_round(rows, lambda item: _send_attempt(*item))
    if done.sent:
        RunAttempt.objects.filter(id__in=[i for i, _ in done.sent], send_due=until).update(send_due=None, sent_at=now)
    if done.retry:
        again = outbox.due_after_failure(timezone.now(), failures + 1, t)
        RunAttempt.objects.filter(id__in=[i for i, _ in done.retry], send_due=until).update(send_due=again)
    sent, down = len(done.sent), done.broker_down
    if not down:
        for ws_id, batch_id, was in Workspace.objects.filter(merge_send_due__lte=now).values_list(
            "id", "batch_id", "merge_send_due"
        ):
            if not Workspace.objects.filter(id=ws_id, merge_send_due=was).update(merge_send_due=until):
                continue  # another cluster's loop took it
            merged = outbox.send_round([batch_id], _send_merge)
            if merged.sent:
                Workspace.objects.filter(id=ws_id, merge_send_due=until).update(merge_send_due=None)
                sent += 1
            else:
                again = outbox.due_after_failure(timezone.now(), failures + 1, t)
                Workspace.objects.filter(id=ws_id, merge_send_due=until).update(merge_send_due=again)
                down = down or merged.broker_down
    if sent or done.retry:
        log.info("outbox: sent %s, %d wait for the broker", words.plural(sent, "owed message"), len(done.retry))
    return sent, down


def sender_loop(stop: threading.Event) -> None:
    """Send what is owed until `stop` is set; sleeps only when a round found nothing to do."""
    failures = 0
    try:
        while not stop.is_set():
            busy = False
            try:
                sent, down = send_owed(failures=failures)
                failures = failures + 1 if down else 0
                busy = sent >= ROUND
            except DatabaseError:
                log.exception("outbox round failed; trying again")
                connections.close_all()
            except Exception:  # the loop must outlive any one bad row or broker error
                log.exception("outbox round failed; trying again")
            if not busy:
                stop.wait(settings.SPAWNER["OUTBOX_POLL_SECONDS"])
    finally:
        connections.close_all()


def start_sender_thread() -> tuple[threading.Thread | None, threading.Event]:
    """The sender loop in a thread of this process; none with the ORM broker (nothing is ever owed)."""
    stop = threading.Event()
    if orm_broker():
        return None, stop
    thread = threading.Thread(target=sender_loop, args=(stop,), name="spawner-outbox", daemon=True)
    thread.start()
    return thread, stop
