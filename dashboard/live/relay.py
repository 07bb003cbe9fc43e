"""The relay: tails the event log in the web process and pushes fragments to the groups watching.

One asyncio task per event loop, started by the first websocket that connects and
ended when the last one leaves. Each step reads the events after the last one seen,
hands them to the topics that want them, and sends each due topic's fragment once to
its group. Database work runs on one dedicated thread, which keeps its connection.

A step runs when the committing process wakes the relay (`selectors.event_wakeups`:
a local socket, or Redis pub/sub at scale), and at the latest every RELAY_POLL_SECONDS,
which covers a wake-up that never came. A wake-up carries nothing: the step reads the
log as a poll would, so the gap handling below is the same either way.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import connection
from django.db.models import Max, Q

from dashboard.live.topics import Event, Topic
from spawner import selectors
from spawner.models import RunEvent

log = logging.getLogger(__name__)

FETCH_LIMIT = 5000
# An id below the newest one seen that has not appeared yet may belong to a transaction
# still committing (PostgreSQL hands out ids before commit); look for it this long.
GAP_SECONDS = 10.0
MAX_GAPS = 1000
# Wake-ups closer than this share a step (a burst of commits costs one read per interval, not one each).
MIN_STEP_SECONDS = 0.005
# Close codes: the htmx ws extension reconnects on 1011 (then gets a snapshot), not on 4404.
TRY_AGAIN = 1011
GONE = 4404


class Relay:
    def __init__(self) -> None:
        self.topics: dict[str, Topic] = {}
        self.watchers: dict[str, set[str]] = {}
        self.last_id: int | None = None
        self.gaps: dict[int, float] = {}
        self.task: asyncio.Task | None = None
        self.wakeups = None  # while the loop runs: how commits wake it
        self.starting = asyncio.Lock()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay")
        self.layer = get_channel_layer()

    @property
    def poll_seconds(self) -> float:
        return settings.DASHBOARD["RELAY_POLL_SECONDS"]

    async def _db(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, with_connection, fn, *args)

    # --- watchers ---------------------------------------------------------------------------

    async def watch(self, topic: Topic, channel_name: str) -> Topic:
        """Join `topic`'s group; returns the topic object shared by everyone watching it."""
        await self.layer.group_add(topic.name, channel_name)
        topic = self.topics.setdefault(topic.name, topic)
        self.watchers.setdefault(topic.name, set()).add(channel_name)
        async with self.starting:
            if self.task is None or self.task.done():
                # Read the newest id before the caller renders its snapshot: nothing falls between.
                self.last_id, self.gaps = await self._db(_newest_id), {}
                self.task = asyncio.create_task(self._run())
        return topic

    async def unwatch(self, topic: Topic, channel_name: str) -> None:
        await self.layer.group_discard(topic.name, channel_name)
        channels = self.watchers.get(topic.name, set())
        channels.discard(channel_name)
        if not channels:
            self.watchers.pop(topic.name, None)
            self.topics.pop(topic.name, None)
        if not self.topics and self.wakeups is not None:
            self.wakeups.poke()  # the loop ends now, not after its poll

    async def snapshot(self, topic: Topic) -> list[str]:
        return await self._db(topic.snapshot)

    # --- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        self.wakeups = wakeups = selectors.event_wakeups()
        try:
            while self.topics:
                started = time.monotonic()
                try:
                    await self.step()
                except Exception:
                    log.exception("relay step failed; retrying")
                    await asyncio.sleep(1)
                # A steady cadence: a slow step eats into the pause instead of adding to it.
                if await wakeups.wait(max(0.0, self.poll_seconds - (time.monotonic() - started))):
                    await asyncio.sleep(max(0.0, MIN_STEP_SECONDS - (time.monotonic() - started)))
        finally:
            wakeups.close()
            if self.wakeups is wakeups:
                self.wakeups = None

    async def step(self) -> bool:
        """Read new events, send the fragments that are due. Returns whether anything was sent."""
        events = await self._db(self.fetch)
        topics = list(self.topics.values())
        for event in events:
            for topic in topics:
                if topic.wants(event):
                    topic.collect(event)
        now = time.monotonic()
        due = [t for t in topics if t.due(now)]
        if not due:
            return False
        rendered = await self._db(_render_all, due, now)
        for name, messages in rendered:
            if isinstance(messages, int):
                # The clients reconnect (1011) and start from a fresh snapshot, or stop (4404).
                await self.layer.group_send(name, {"type": "live.close", "code": messages})
                self.topics.pop(name, None)
                self.watchers.pop(name, None)
                continue
            for html in messages:
                await self.layer.group_send(name, {"type": "live.fragment", "html": html})
        return True

    def fetch(self) -> list[Event]:
        """Events after the last one seen, and any missing ones that appeared since."""
        now = time.monotonic()
        self.gaps = {i: t for i, t in self.gaps.items() if now - t < GAP_SECONDS}
        where = Q(id__gt=self.last_id or 0)
        if self.gaps:
            where |= Q(id__in=list(self.gaps))
        rows = list(
            RunEvent.objects.filter(where).order_by("id").values_list("id", "batch_id", "run_id", "kind")[:FETCH_LIMIT]
        )
        events = []
        for row in rows:
            event = Event(*row)
            if event.id in self.gaps:
                del self.gaps[event.id]
            elif event.id > (self.last_id or 0):
                missing = range((self.last_id or 0) + 1, event.id)
                if self.last_id is not None and len(missing) <= MAX_GAPS:
                    self.gaps.update(dict.fromkeys(missing, now))
                self.last_id = event.id
            events.append(event)
        return events


def with_connection(fn, *args):
    """In a reader thread of its own (the relay's, the event streams' bell): keep the thread's
    connection between reads; drop it after an error."""
    try:
        return fn(*args)
    except Exception:
        connection.close()
        raise


def _newest_id() -> int:
    return RunEvent.objects.aggregate(newest=Max("id"))["newest"] or 0


def _render_all(topics: list[Topic], now: float) -> list[tuple[str, list[str] | int]]:
    """Each topic's messages, or the close code for its clients when it cannot be rendered."""
    rendered: list[tuple[str, list[str] | int]] = []
    for topic in topics:
        try:
            rendered.append((topic.name, topic.take(now)))
        except ObjectDoesNotExist:
            rendered.append((topic.name, GONE))
        except Exception:
            log.exception("could not render %s", topic.name)
            rendered.append((topic.name, TRY_AGAIN))
    return rendered


_relays: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Relay] = weakref.WeakKeyDictionary()


def get_relay() -> Relay:
    """The relay of the running event loop (one per web process in production)."""
    loop = asyncio.get_running_loop()
    if loop not in _relays:
        _relays[loop] = Relay()
    return _relays[loop]
