"""Ride out lock contention the database resolves by aborting one side.

PostgreSQL ends one transaction of a deadlock (SQLSTATE 40P01) or of a serialization
conflict (40001); the other side proceeds. The lock order (a batch row, then agent type
rows, then runs and attempts) keeps Spawner's own writers out of such cycles, but a
transaction that does its work again after the abort is the database's own advice, and
an advance or a claim is safe to repeat: each reads the state afresh under its locks.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import OperationalError, connection

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRYABLE = {"40P01", "40001"}  # deadlock_detected, serialization_failure


def retryable(exc: BaseException) -> bool:
    return getattr(exc.__cause__, "sqlstate", None) in RETRYABLE


def again_on_conflict(fn: Callable[[], T], *, what: str, tries: int = 4) -> T:
    """fn(), repeated after a short random pause when the database aborted it for a deadlock.

    Inside a caller's transaction the abort spoiled the caller's work too: raised as it is."""
    if connection.in_atomic_block:
        return fn()
    for n in range(1, tries + 1):
        try:
            return fn()
        except OperationalError as exc:
            if n == tries or not retryable(exc):
                raise
            log.warning("%s: the database aborted it (%s); trying again (%d of %d)", what, exc.__cause__, n + 1, tries)
            time.sleep(random.uniform(0.01, 0.05) * n)
    raise AssertionError("unreachable")
