"""The broker outbox's pure decisions: when an owed message is due, and what a round sends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spawner.core import outbox

T = outbox.Timing(grace=10, retry=0.5, retry_max=5, claim=30)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class ConnectionError(Exception):  # noqa: A001 - named as redis-py names its own (not the builtin)
    pass


class RedisConnectionError(ConnectionError):
    pass


def test_a_written_message_waits_out_the_committers_head_start():
    assert outbox.due_on_write(NOW, T) == NOW + timedelta(seconds=10)


@pytest.mark.parametrize(("failures", "seconds"), [(0, 0.5), (1, 0.5), (2, 1), (3, 2), (4, 4), (5, 5), (50, 5)])
def test_failed_sends_back_off_doubling_up_to_the_cap(failures, seconds):
    assert outbox.due_after_failure(NOW, failures, T) == NOW + timedelta(seconds=seconds)


def test_a_claim_holds_the_row_for_its_lease():
    assert outbox.claimed_until(NOW, T) == NOW + timedelta(seconds=30)


@pytest.mark.parametrize(
    "exc",
    [RedisConnectionError("Error 111 connecting"), ConnectionRefusedError(), TimeoutError(), OSError("broken pipe")],
)
def test_a_connection_or_socket_error_means_the_broker_is_unreachable(exc):
    assert outbox.unreachable(exc)


@pytest.mark.parametrize("exc", [ValueError("bad"), TypeError("not serialisable"), KeyError("x")])
def test_other_errors_are_the_messages_fault(exc):
    assert not outbox.unreachable(exc)


def test_a_round_sends_everything_when_the_broker_answers():
    sent = []
    result = outbox.send_round([1, 2, 3], sent.append)
    assert result == outbox.Round((1, 2, 3), (), False)
    assert sent == [1, 2, 3]


def test_a_round_stops_at_the_first_unreachable_broker_and_keeps_the_rest_owed():
    asked = []

    def send(key):
        asked.append(key)
        if key == 2:
            raise RedisConnectionError("Connection refused")

    result = outbox.send_round([1, 2, 3, 4], send)
    assert result == outbox.Round((1,), (2, 3, 4), True)
    assert asked == [1, 2], "a dead broker is asked once, not once per message"


def test_one_bad_message_is_retried_later_and_the_round_goes_on():
    def send(key):
        if key == 2:
            raise ValueError("cannot serialise")

    assert outbox.send_round([1, 2, 3], send) == outbox.Round((1, 3), (2,), False)


def test_an_empty_round_sends_nothing():
    assert outbox.send_round([], lambda key: 1 / 0) == outbox.Round((), (), False)
