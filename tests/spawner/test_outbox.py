"""The broker outbox on the database: the ORM broker's fast path stores nothing more; with a Redis
broker that cannot be reached, a launch is stored with its messages owed and raises nothing."""

from __future__ import annotations

import socket

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from spawner.engine import queue
from spawner.models import RunAttempt
from tests.spawner.helpers import queued_batch


@pytest.fixture
def unreachable_redis(settings, monkeypatch):
    """A Redis broker on a port nothing listens on: every send is refused at once."""
    from django_q.conf import Conf

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    q = {k: v for k, v in django_settings.Q_CLUSTER.items() if k != "orm"}
    settings.Q_CLUSTER = {**q, "redis": url, "broker_class": "spawner.engine.broker.Redis"}
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", url)
    monkeypatch.setattr(Conf, "BROKER_CLASS", "spawner.engine.broker.Redis")
    queue.reset_broker()
    yield url
    queue.reset_broker()


def test_with_the_orm_broker_the_message_is_a_row_of_the_same_commit(transactional_db, agent_types, tmp_path):
    from django_q.models import OrmQ

    if not queue.orm_broker():
        pytest.skip("the embedded default (ORM broker) only")
    batch = queued_batch(tmp_path)
    attempts = RunAttempt.objects.filter(run__batch=batch)
    assert attempts.count() == 2
    assert not attempts.filter(send_due__isnull=False).exists(), "nothing owed: the message is already stored"
    assert OrmQ.objects.count() == 2


def test_a_launch_with_redis_unreachable_is_stored_with_its_messages_owed(
    transactional_db, agent_types, tmp_path, unreachable_redis
):
    before = timezone.now()
    batch = queued_batch(tmp_path)  # the services' launch: it must not raise ConnectionError
    attempts = RunAttempt.objects.filter(run__batch=batch)
    assert attempts.count() == 2
    due = list(attempts.values_list("send_due", flat=True))
    assert all(d is not None for d in due), "each attempt's message is owed"
    # Marked for an early retry by the sender loop, not left to the committer's grace.
    retry = django_settings.SPAWNER["OUTBOX_RETRY_SECONDS"]
    assert all((d - before).total_seconds() <= retry + 5 for d in due)


def test_the_sender_loop_keeps_owed_messages_while_the_broker_is_down(
    transactional_db, agent_types, tmp_path, unreachable_redis
):
    batch = queued_batch(tmp_path)
    attempts = RunAttempt.objects.filter(run__batch=batch)
    attempts.update(send_due=timezone.now())  # due now
    sent, down = queue.send_owed(failures=3)
    assert (sent, down) == (0, True)
    assert not attempts.filter(send_due__isnull=True).exists(), "still owed, due again later"
    assert all(d > timezone.now() for d in attempts.values_list("send_due", flat=True))


def test_an_owed_attempt_that_no_longer_waits_is_dropped_unsent(
    transactional_db, agent_types, tmp_path, unreachable_redis
):
    from spawner.states import AttemptStatus

    batch = queued_batch(tmp_path)
    attempts = RunAttempt.objects.filter(run__batch=batch)
    attempts.update(send_due=timezone.now(), status=AttemptStatus.CANCELLED)
    assert queue.send_owed() == (0, False)
    assert not attempts.filter(send_due__isnull=False).exists()
