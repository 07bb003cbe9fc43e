"""Wake-ups: sent once per committed transaction, never for a rolled-back one, heard by the waiting
side on one machine (local sockets) and across machines (Redis pub/sub); off means polls only.

And with real clusters: a launched batch reaches the pusher through a wake-up alone (its poll set
far beyond the test's bound), and with wake-ups off the poll alone still runs everything."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from django.db import transaction

from spawner.engine import events, wake
from spawner.models import Batch
from tests.conftest import CLUSTER_ENV, ClusterProcess, database_url_for_subprocess
from tests.spawner.helpers import launch, wait_batch

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/11")


@pytest.fixture
def listener(settings):
    """A listener on the one-machine transport (local sockets), whatever the test run's broker."""
    settings.Q_CLUSTER = {k: v for k, v in settings.Q_CLUSTER.items() if k != "redis"}
    ear = wake.Listener(wake.EVENTS)
    assert ear.active
    ear.drain()
    yield ear
    ear.close()


def heard(ear: wake.Listener) -> bool:
    """Whether a wake-up is waiting (bounded: a datagram sent before this call is already there)."""
    return ear.wait(1.0)


def test_an_event_committed_wakes_a_listener_once_after_the_commit(db, listener, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        batch = Batch.objects.create(name="w", spec={}, mode="parallel")
        for kind in ("batch.reopened", "batch.cancel_requested", "batch.reopened"):
            events.record(batch_id=batch.id, kind=kind)
        assert not listener.drain()  # nothing before the commit
    assert len([c for c in callbacks if c is wake._callbacks()[wake.EVENTS]]) == 1
    assert heard(listener)
    assert not listener.drain()  # one wake-up, not three


def test_a_rolled_back_transaction_wakes_nobody(transactional_db, listener):
    batch = Batch.objects.create(name="w", spec={}, mode="parallel")
    listener.drain()
    with pytest.raises(RuntimeError), transaction.atomic():
        events.record(batch_id=batch.id, kind="batch.reopened")
        raise RuntimeError("abandon")
    assert not listener.wait(0.2)
    with transaction.atomic():  # and the next transaction still wakes (nothing stuck from the first)
        events.record(batch_id=batch.id, kind="batch.reopened")
    assert heard(listener)


def test_outside_a_transaction_the_wake_up_goes_at_once(transactional_db, listener):
    batch = Batch.objects.create(name="w", spec={}, mode="parallel")
    listener.drain()
    events.record(batch_id=batch.id, kind="batch.reopened")
    assert heard(listener)


def test_off_sends_and_hears_nothing(db, settings, listener):
    settings.SPAWNER = {**settings.SPAWNER, "WAKE": False}
    wake.nudge(wake.EVENTS)
    assert not listener.wait(0.2)
    deaf = wake.Listener(wake.EVENTS)
    assert not deaf.active and not deaf.wait(0.01)


def test_a_socket_whose_process_is_gone_is_removed(db, listener):
    import socket

    path = listener.path.with_name("999999-gone")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody reads it
    wake.nudge(wake.EVENTS)
    assert not path.exists()
    assert heard(listener)


def test_a_full_socket_does_not_block_the_sender(db, listener):
    for _ in range(5000):  # far more than a datagram socket buffers
        wake.nudge(wake.EVENTS)
    assert heard(listener)
    assert not listener.drain()


def test_channels_and_databases_are_apart(db, listener, settings):
    dispatch = wake.Listener(wake.DISPATCH)
    try:
        wake.nudge(wake.DISPATCH)
        assert heard(dispatch) and not listener.drain()
    finally:
        dispatch.close()
    other = {**settings.DATABASES["default"], "NAME": "another-database"}
    assert wake._key("sqlite", "", "", other["NAME"]) != wake.database_key()


def test_the_async_listener_wakes_an_event_loop(db):
    async def scenario():
        ear = wake.AsyncListener(wake.EVENTS)
        try:
            assert not await ear.wait(0.05)
            asyncio.get_running_loop().call_later(0.01, wake.nudge, wake.EVENTS)
            return await ear.wait(5.0)
        finally:
            ear.close()

    assert asyncio.run(scenario())


@pytest.fixture
def over_redis(settings):
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "redis": REDIS_URL}


def test_over_redis_a_subscriber_hears_a_commit(transactional_db, over_redis):
    ear = wake.Listener(wake.EVENTS)
    try:
        assert ear.pubsub is not None
        ear.wait(0.2)  # the subscription's confirmation
        with transaction.atomic():
            batch = Batch.objects.create(name="w", spec={}, mode="parallel")
            events.record(batch_id=batch.id, kind="batch.reopened")
        deadline = time.monotonic() + 5
        while not ear.wait(0.5):
            assert time.monotonic() < deadline, "no wake-up over Redis"
    finally:
        ear.close()


def test_over_redis_the_async_listener_wakes_an_event_loop(db, over_redis):
    async def scenario():
        ear = wake.AsyncListener(wake.EVENTS)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # until the subscription is in place, then one more
                await asyncio.to_thread(wake.nudge, wake.EVENTS)
                if await ear.wait(0.5):
                    return True
            return False
        finally:
            ear.close()

    assert asyncio.run(scenario())


# --- with real clusters -----------------------------------------------------------------------------


@pytest.fixture
def cluster_with(transactional_db, tmp_path, settings):
    """A real `spawner_cluster` with extra environment (the `cluster` fixture's, plus `extra`)."""
    started = []

    def start(**extra: str) -> ClusterProcess:
        log_dir = tmp_path / "logs"
        settings.SPAWNER = {**settings.SPAWNER, "LOG_DIR": log_dir, "WORKSPACE_DIR": tmp_path / "ws"}
        env = {
            **os.environ,
            **CLUSTER_ENV,
            "DATABASE_URL": database_url_for_subprocess(),
            "SPAWNER_LOG_DIR": str(log_dir),
            "SPAWNER_WORKSPACE_DIR": str(tmp_path / "ws"),
            **extra,
        }
        c = ClusterProcess(env, tmp_path / "cluster.log")
        c.start()
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


SPEC = """
name: woken
agent: sh
max_parallel: 2
tasks:
  - {key: a, prompt: "true"}
  - {key: b, prompt: "true"}
  - {key: c, prompt: "true"}
"""


@pytest.mark.integration
def test_a_launch_reaches_the_pusher_by_a_wake_up(cluster_with, agent_types, tmp_path, settings):
    """The pusher's poll is ten minutes: only wake-ups (the launch's, then each advance's) can start
    three runs, two at a time, within the test's bound."""
    if "orm" not in settings.Q_CLUSTER:
        pytest.skip("the Redis broker's pusher blocks on its list; it needs no wake-up")
    cluster_with(SPAWNER_BROKER_POLL="600")
    time.sleep(1.0)  # the pusher's first look found nothing; it now waits out its poll
    batch = wait_batch(launch(SPEC, tmp_path), timeout=120)
    assert batch.status == "succeeded"
    assert sorted(batch.runs.values_list("status", flat=True)) == ["succeeded"] * 3


@pytest.mark.integration
def test_without_wake_ups_the_polls_still_run_everything(cluster_with, agent_types, tmp_path, settings):
    settings.SPAWNER = {**settings.SPAWNER, "WAKE": False}
    cluster_with(SPAWNER_WAKE="off", SPAWNER_BROKER_POLL="0.2")
    batch = wait_batch(launch(SPEC, tmp_path), timeout=120)
    assert batch.status == "succeeded"
    assert sorted(batch.runs.values_list("status", flat=True)) == ["succeeded"] * 3
