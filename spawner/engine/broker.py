"""q2's brokers, plus two things only the pusher can do: say which cluster took a message, and stop
pulling while its cluster drains (see `spawner.engine.recovery`)."""

from __future__ import annotations

import time

from django_q.brokers.orm import ORM
from django_q.conf import Conf

from spawner.core import outbox
from spawner.engine import lifecycle, recovery


class _Holding:
    def dequeue(self):
        if lifecycle.draining():
            time.sleep(max(Conf.POLL, 0.1))
            return None
        try:
            tasks = super().dequeue()
        except Exception as exc:
            if not outbox.unreachable(exc):
                raise
            # The broker is down (Redis restarting): try again shortly rather than let q2's pusher
            # die, wait 10 s and be started again by the sentinel.
            time.sleep(0.5)
            return None
        if tasks:
            recovery.stamp_held(tasks)
        return tasks


class Orm(_Holding, ORM):
    pass


try:  # the Redis client is an optional dependency
    from django_q.brokers.redis_broker import Redis as _RedisBroker
except ImportError:  # pragma: no cover
    _RedisBroker = None

if _RedisBroker is not None:

    class Redis(_Holding, _RedisBroker):
        pass
