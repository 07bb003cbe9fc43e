"""q2's brokers, plus what only the pusher can do: say which cluster took a message, stop pulling
while its cluster drains (see `spawner.engine.recovery`), take every waiting message at once, and
wait for a wake-up (`spawner.engine.wake`) instead of sleeping between polls.

Taking at once matters when a batch starts: q2 takes one message per query and writes a lock per
message, so sixteen attempts launched together cost sixteen rounds of pusher writes before the last
one reaches a worker. Here one statement takes up to `TAKE` messages and one more marks them held.
"""

from __future__ import annotations

import time

from django.db import connections
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ

from spawner.core import outbox
from spawner.engine import lifecycle, recovery, wake

# Messages one pusher takes in one go, at most (q2's `bulk` if set higher). The pusher hands them to
# q2's task queue, which holds `queue_limit` (the number of workers); the rest wait in the broker.
TAKE = 16


def take_limit() -> int:
    return max(Conf.BULK, TAKE)


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


class _WakingOrm(ORM):
    """The ORM broker: take what is there in one statement; when nothing is, wait for a wake-up from
    the process that committed a message, or the poll interval, whichever comes first."""

    listener: wake.Listener | None = None

    def dequeue(self):
        if self.listener is None:  # before the first look: a wake-up sent in between is kept
            self.listener = wake.Listener(wake.DISPATCH)
        tasks = self.take()
        if tasks:
            return tasks
        self.listener.wait(Conf.POLL)
        return None

    def take(self) -> list[tuple[int, str]]:
        self.get_connection()  # q2's connection hygiene (close stale connections)
        conn = connections[Conf.ORM]
        table = conn.ops.quote_name(OrmQ._meta.db_table)
        now = timezone.now()
        skip = " FOR UPDATE SKIP LOCKED" if conn.vendor == "postgresql" else ""
        sql = (
            f"UPDATE {table} SET lock = %s WHERE id IN ("
            f"SELECT id FROM {table} WHERE key = %s AND lock < %s ORDER BY id LIMIT %s{skip}) "
            f"RETURNING id, payload"
        )
        params = [
            conn.ops.adapt_datetimefield_value(self.timeout(None)),
            self.list_key,
            conn.ops.adapt_datetimefield_value(now),
            take_limit(),
        ]
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        return sorted(rows)


class Orm(_Holding, _WakingOrm):
    pass


try:  # the Redis client is an optional dependency
    from django_q.brokers.redis_broker import Redis as _RedisBroker
except ImportError:  # pragma: no cover
    _RedisBroker = None

if _RedisBroker is not None:

    class _TakingRedis(_RedisBroker):
        """q2's blocking pop for the first message, then whatever else is waiting in one more call."""

        def dequeue(self):
            first = self.connection.blpop(self.list_key, 1)
            if not first:
                return None
            more = self.connection.lpop(self.list_key, take_limit() - 1) or []
            return [(None, payload) for payload in [first[1], *more]]

    class Redis(_Holding, _TakingRedis):
        pass
