"""A deadlock the database broke is done again; any other database error is not."""

from __future__ import annotations

import pytest
from django.db import OperationalError

from spawner.engine import contention


class _Cause(Exception):
    def __init__(self, sqlstate):
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _failing(times: int, sqlstate: str):
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= times:
            raise OperationalError("aborted") from _Cause(sqlstate)
        return "done"

    return fn, calls


def test_a_deadlock_is_tried_again_until_it_goes_through():
    fn, calls = _failing(2, "40P01")
    assert contention.again_on_conflict(fn, what="test") == "done"
    assert len(calls) == 3


def test_a_serialization_failure_is_tried_again():
    fn, calls = _failing(1, "40001")
    assert contention.again_on_conflict(fn, what="test") == "done"
    assert len(calls) == 2


def test_other_database_errors_are_raised_at_once():
    fn, calls = _failing(1, "08006")  # connection failure
    with pytest.raises(OperationalError):
        contention.again_on_conflict(fn, what="test")
    assert len(calls) == 1


def test_it_gives_up_after_its_tries():
    fn, calls = _failing(10, "40P01")
    with pytest.raises(OperationalError):
        contention.again_on_conflict(fn, what="test", tries=3)
    assert len(calls) == 3


@pytest.mark.django_db(transaction=True)
def test_inside_a_callers_transaction_the_abort_is_the_callers():
    from django.db import transaction

    fn, calls = _failing(1, "40P01")
    with pytest.raises(OperationalError), transaction.atomic():
        contention.again_on_conflict(fn, what="test")
    assert len(calls) == 1
