"""A batch's events as Server-Sent Events (`GET /api/batches/{id}/events`): `spawn --server`
follows a batch through it instead of polling.

Each event of the batch's log (spawner.models.RunEvent) after the last one the client has
(`?after=` or the `Last-Event-ID` header) goes out as `id: N`, `event: <kind>` and a JSON `data:`
line (kind, status, run id and key, attempt, time; never the event's data). Without either, the
stream opens with a `snapshot`: the batch as `GET /api/batches/{id}` gives it, at the log's last
event then. While nothing happens a `: keep-alive` comment goes out every EVENTS_KEEPALIVE_SECONDS.
The stream ends with an `end` event once the batch has ended and every event before is sent, or
silently after EVENTS_STREAM_SECONDS (the client resumes with Last-Event-ID).

An idle stream waits for a wake-up (events committed anywhere: `Bell`), or EVENTS_WAIT_SECONDS at
most, before it reads the log again; under a WSGI server it only sleeps.

Memory stays bounded per client: under daphne (ASGI) the body is an async iterator, and each chunk
is read from the log only once the last one was handed to the connection, which spawner.webserver
holds back while the client is not reading; at most EVENTS_PER_READ events are read at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.http import StreamingHttpResponse

from dashboard.live.relay import with_connection
from spawner import selectors
from spawner.models import Batch
from spawner.states import BATCH_TERMINAL

log = logging.getLogger(__name__)

EVENTS_PER_READ = 500
# PostgreSQL hands out event ids before commit: an id below the newest one seen that is not in the log
# yet may belong to a transaction still committing. Events past such a hole wait this long for it to
# fill (the websocket relay's rule); a hole older than that was a rolled-back insert.
GAP_SECONDS = 10.0
GAP_SPAN = 20_000  # a wider range of ids is not checked one by one (the relay's MAX_GAPS, roomier)
RETRY_MILLISECONDS = 2000  # how long a browser's EventSource waits before it reconnects


def conf(name: str) -> float:
    return settings.SPAWNER[name]


def frame(event_id: int, name: str, data) -> bytes:
    body = json.dumps(data, cls=DjangoJSONEncoder, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event_id}\nevent: {name}\ndata: {body}\n\n".encode()


def settled(events: list[dict], present: set[int] | None, after: int, missing_since: dict[int, float], now: float):
    """The leading events that may go out now: those below the first id after `after` that the log
    lacks and has lacked for less than GAP_SECONDS (`missing_since` remembers when each hole was
    first seen). `present`: the log's ids in (after, last event's id], or None (not checked)."""
    if not events or present is None:
        return events
    holes = [i for i in range(after + 1, events[-1]["id"] + 1) if i not in present]
    for i in list(missing_since):
        if i <= after:
            del missing_since[i]
    for i in holes:
        missing_since.setdefault(i, now)
    open_holes = [i for i in holes if now - missing_since[i] < GAP_SECONDS]
    if not open_holes:
        return events
    return [e for e in events if e["id"] < open_holes[0]]


def late_events(read: list[dict], present: dict[int, int] | None, batch_id: int) -> int | None:
    """The first id of this batch's events that the log holds (`present`: id -> batch, read second)
    but the read of its events (first) did not return: committed between the two reads. Sending
    the events past it would skip it for good."""
    if not present:
        return None
    seen = {e["id"] for e in read}
    return min((i for i, b in present.items() if b == batch_id and i not in seen), default=None)


class EventStream:
    """One client's stream: `step()` reads the log once and says what to send."""

    def __init__(self, batch_id: int, after: int | None):
        self.batch_id = batch_id
        self.after = after or 0
        self.snapshot = after is None
        self.started = self.last_sent = time.monotonic()
        self.done = False
        self.missing_since: dict[int, float] = {}

    def step(self) -> tuple[bytes, bool]:
        """(what to send, whether the log is idle: wait before the next step)."""
        now = time.monotonic()
        if self.snapshot:
            self.snapshot = False
            self.after = selectors.last_event_id(self.batch_id)  # first: a later event is sent again, never lost
            batch = Batch.objects.select_related("owner").filter(id=self.batch_id).first()
            if batch is None:
                self.done = True
                return frame(self.after, "end", {"status": None}), False
            self.last_sent = now
            return f"retry: {RETRY_MILLISECONDS}\n\n".encode() + frame(
                self.after, "snapshot", selectors.batch_record(batch)
            ), False
        status = selectors.batch_status(self.batch_id)  # before the events: none written before it ended is missed
        read = selectors.events_after(self.batch_id, self.after, EVENTS_PER_READ)
        present = selectors.event_ids_between(self.after, read[-1]["id"], GAP_SPAN) if read else {}
        late = late_events(read, present, self.batch_id)
        if late:  # committed between the two reads: stop before it, and read again at once
            read = [e for e in read if e["id"] < late]
        events = settled(read, None if present is None else set(present), self.after, self.missing_since, now)
        if events:
            self.after, self.last_sent = events[-1]["id"], now
            # Not idle: look again at once (the batch may have ended with these; no wake-up follows).
            return b"".join(frame(e["id"], e["kind"], e) for e in events), False
        if read or late:  # held back behind a hole that may still fill: look again, never end yet
            return b"", not late
        if status is None or status in BATCH_TERMINAL:
            self.done = True
            return frame(self.after, "end", {"status": status}), False
        if now - self.started >= conf("EVENTS_STREAM_SECONDS"):
            self.done = True
            return b": this stream ends here; resume it with Last-Event-ID\n\n", False
        if now - self.last_sent >= 2 and not connection.in_atomic_block:
            # An idle stream gives its database connection back (a stream lasts up to half an hour;
            # fifty followers must not hold fifty connections the clusters need).
            connection.close()
        if now - self.last_sent >= conf("EVENTS_KEEPALIVE_SECONDS"):
            self.last_sent = now
            return b": keep-alive\n\n", True
        return b"", True


class Bell:
    """One wake-up listener per web process (per event loop) for all its streams. A commit of events
    anywhere wakes the listener; it reads once which batches got events since it last looked and
    rings only the streams of those batches, which then read their log at once instead of after
    their EVENTS_WAIT_SECONDS sleep (kept as the fallback: a wake-up lost, or an event that
    PostgreSQL committed behind a newer id). A stream takes its batch's `ring` before it reads the
    log, so a commit between the read and the wait still wakes it."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.listener = None
        self.task: asyncio.Task | None = None
        self.rings: dict[int, asyncio.Event] = {}
        self.streams: dict[int, int] = {}
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="event-bell")

    def open(self, batch_id: int) -> None:
        loop = asyncio.get_running_loop()
        if self.loop is not loop:  # a new loop (tests): what the old one held went with it
            self._stop()
            self.loop, self.rings, self.streams = loop, {}, {}
        self.streams[batch_id] = self.streams.get(batch_id, 0) + 1
        if self.task is None or self.task.done():
            self._stop()
            self.listener = selectors.event_wakeups()
            self.task = loop.create_task(self._listen(self.listener))

    def ring(self, batch_id: int) -> asyncio.Event:
        return self.rings.setdefault(batch_id, asyncio.Event())

    def close(self, batch_id: int) -> None:
        if self.loop is not asyncio.get_running_loop():
            return
        self.streams[batch_id] = self.streams.get(batch_id, 1) - 1
        if self.streams[batch_id] <= 0:
            self.streams.pop(batch_id, None)
            self.rings.pop(batch_id, None)
        if not self.streams:
            self._stop()

    def _stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.listener is not None:
            self.listener.close()
        self.task = self.listener = None

    async def _listen(self, listener) -> None:
        loop = asyncio.get_running_loop()
        last = await loop.run_in_executor(self.executor, with_connection, selectors.newest_event_id)
        while True:
            if not await listener.wait(60.0):
                continue
            try:
                read = selectors.batches_with_events_after
                batches, last = await loop.run_in_executor(self.executor, with_connection, read, last)
            except Exception:  # the database is away: every stream reads for itself, as without wake-ups
                log.warning("event stream wake-ups: reading the log failed; waking every stream", exc_info=True)
                batches = set(self.rings)
                await asyncio.sleep(1)
            for batch_id in batches:
                if (ring := self.rings.pop(batch_id, None)) is not None:
                    ring.set()

    async def wait(self, ring: asyncio.Event, timeout: float) -> None:
        """Until `ring` rings or `timeout` seconds pass."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ring.wait(), timeout)


bell = Bell()


def _wait_for_events_sync(batch_id: int, after: int) -> None:
    time.sleep(conf("EVENTS_WAIT_SECONDS"))


async def _async_body(stream: EventStream):
    step = sync_to_async(stream.step)  # the request's own thread: one database connection per stream
    bell.open(stream.batch_id)
    try:
        while not stream.done:
            ring = bell.ring(stream.batch_id)  # before the read: a commit after it rings this one
            chunk, idle = await step()
            if chunk:
                yield chunk
            if idle and not stream.done:
                await bell.wait(ring, conf("EVENTS_WAIT_SECONDS"))
    finally:
        bell.close(stream.batch_id)


def _sync_body(stream: EventStream):
    """Under a WSGI server (the test server): the same stream, holding its thread."""
    while not stream.done:
        chunk, idle = stream.step()
        if chunk:
            yield chunk
        if idle and not stream.done:
            _wait_for_events_sync(stream.batch_id, stream.after)


def response(request, batch_id: int, after: int | None) -> StreamingHttpResponse:
    stream = EventStream(batch_id, after)
    body = _async_body(stream) if isinstance(request, ASGIRequest) else _sync_body(stream)
    answer = StreamingHttpResponse(body, content_type="text/event-stream; charset=utf-8")
    answer["Cache-Control"] = "no-cache"
    answer["X-Accel-Buffering"] = "no"  # a proxy in front must not hold the stream back
    return answer
