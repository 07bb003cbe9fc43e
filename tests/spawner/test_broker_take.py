"""The ORM broker's pusher takes every waiting message in one statement, each once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from django_q.models import OrmQ

from spawner.engine import broker

pytestmark = pytest.mark.skipif("orm" not in settings.Q_CLUSTER, reason="the ORM broker (this run uses Redis)")


def test_one_take_gets_every_waiting_message_once_in_order(db):
    pusher = broker.Orm()
    past = timezone.now() - timedelta(seconds=1)
    ids = [OrmQ.objects.create(key=pusher.list_key, payload=f"m{i}", lock=past).id for i in range(5)]
    OrmQ.objects.create(key="another-cluster-name", payload="not ours", lock=past)
    OrmQ.objects.create(key=pusher.list_key, payload="taken by someone", lock=timezone.now() + timedelta(hours=1))

    taken = pusher.take()

    assert taken == [(i, f"m{n}") for n, i in enumerate(ids)]
    assert all(lock > timezone.now() for lock in OrmQ.objects.filter(id__in=ids).values_list("lock", flat=True))
    assert pusher.take() == []  # locked now: a second pusher (or this one) does not take them again


def test_a_take_is_bounded(db, monkeypatch):
    monkeypatch.setattr(broker, "TAKE", 3)
    pusher = broker.Orm()
    past = timezone.now() - timedelta(seconds=1)
    for i in range(5):
        OrmQ.objects.create(key=pusher.list_key, payload=f"m{i}", lock=past)
    assert [p for _, p in pusher.take()] == ["m0", "m1", "m2"]
    assert [p for _, p in pusher.take()] == ["m3", "m4"]


def test_an_empty_queue_waits_for_the_poll_then_takes_what_came(db):
    pusher = broker.Orm()
    assert pusher.dequeue() is None  # waited Conf.POLL, found nothing
    assert pusher.listener is not None and pusher.listener.active
    OrmQ.objects.create(key=pusher.list_key, payload="m", lock=timezone.now() - timedelta(seconds=1))
    assert [p for _, p in pusher.dequeue()] == ["m"]
    pusher.listener.close()
