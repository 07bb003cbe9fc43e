"""Readers of a running batch over a real web server, as tests see what a person's page or an API
client saw: `Watcher` applies a batch page's websocket fragments as htmx would; `EventReader` follows
the batch's Server-Sent Events (`GET /api/batches/{id}/events`) and keeps every event id it got."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import urllib.error
import urllib.request

from spawner.models import AgentRun
from tests.spawner.helpers import wait_for

# --- the batch page over a websocket ---------------------------------------------------------

ROW = re.compile(r'<tr id="run-(\d+)" class="run-row" data-status="([a-z_]+)" data-attempt="(\d+)"')
HEADER = re.compile(r'<section id="batch-header" class="card" data-status="([a-z_]+)"')
TERMINAL = {"succeeded", "partial", "failed", "cancelled"}


class Watcher:
    """One reader of a batch page over a real websocket: what its page shows, applied fragment by
    fragment, as htmx swaps by id. It reconnects after a close (as the page's ws extension does)
    and starts again from the snapshot."""

    def __init__(self, url: str, origin: str, cookie: str):
        self.url, self.origin, self.cookie = url, origin, cookie
        self.rows: dict[int, tuple[str, int]] = {}
        self.status = ""
        self.messages = 0
        self.reconnects = 0
        self.errors: list[str] = []
        self.last_message = time.monotonic()

    def apply(self, html: str) -> None:
        self.messages += 1
        self.last_message = time.monotonic()
        for run_id, status, attempt in ROW.findall(html):
            self.rows[int(run_id)] = (status, int(attempt))
        if m := HEADER.search(html):
            self.status = m.group(1)

    async def watch(self, stop: asyncio.Event, deadline: float, delay: float = 0.0) -> None:
        import websockets

        await asyncio.sleep(delay)  # readers arrive one after another, not in one instant
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                async with websockets.connect(
                    self.url,
                    origin=self.origin,
                    additional_headers={"Cookie": self.cookie},
                    max_size=None,
                    open_timeout=60,
                    ping_interval=None,  # a busy server's late pong must not end the reader's view
                ) as ws:
                    while not stop.is_set():
                        try:
                            html = await asyncio.wait_for(ws.recv(), 0.5)
                        except TimeoutError:
                            continue
                        self.apply(html)
            except (OSError, websockets.WebSocketException, TimeoutError) as exc:
                self.errors.append(repr(exc))
                self.reconnects += 1
                await asyncio.sleep(0.5)


def watch_in_thread(watchers: list[Watcher], timeout: float):
    """Run the watchers in their own event loop thread; returns (thread, stop)."""
    loop = asyncio.new_event_loop()
    holder = {}

    def run():
        asyncio.set_event_loop(loop)

        async def main():
            holder["stop"] = asyncio.Event()
            deadline = time.monotonic() + timeout
            await asyncio.gather(*(w.watch(holder["stop"], deadline, i * 0.2) for i, w in enumerate(watchers)))

        loop.run_until_complete(main())
        loop.close()

    thread = threading.Thread(target=run, name="watchers", daemon=True)
    thread.start()
    wait_for(lambda: "stop" in holder, 10, "the watchers' loop")

    def stop():
        loop.call_soon_threadsafe(holder["stop"].set)
        thread.join(timeout=30)

    return thread, stop


def session_cookie() -> str:
    from django.contrib.auth.models import User
    from django.test import Client

    client = Client()
    client.force_login(User.objects.create_superuser("watcher", password="a-long-watcher-pw"))
    return f"sessionid={client.cookies['sessionid'].value}"


def database_view(batch) -> tuple[dict[int, tuple[str, int]], str]:
    batch.refresh_from_db()
    return {r.id: (r.status, r.attempt) for r in AgentRun.objects.filter(batch=batch)}, batch.status


def settled(watchers: list[Watcher], batch, quiet: float = 2.0) -> bool:
    """Every watcher shows what the database holds, and nothing arrived for `quiet` seconds."""
    rows, status = database_view(batch)
    now = time.monotonic()
    return all(w.rows == rows and w.status == status and now - w.last_message > quiet for w in watchers)


# --- the batch's event stream (Server-Sent Events) ---------------------------------------------


class EventReader:
    """An API client following a batch's events from its first one (`?after=0`), in a thread of its
    own: every event id it got, in the order it got them. After a dropped connection it resumes
    where it was (`?after=<last id>`, as Last-Event-ID would), until the stream's `end` event."""

    def __init__(self, base_url: str, batch_id: int, cookie: str):
        self.url = f"{base_url}/api/batches/{batch_id}/events"
        self.cookie = cookie
        self.ids: list[int] = []
        self.ended = False
        self.reconnects = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-reader", daemon=True)

    def start(self) -> EventReader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=40)

    def _run(self) -> None:
        while not self._stop.is_set() and not self.ended:
            after = self.ids[-1] if self.ids else 0
            request = urllib.request.Request(
                f"{self.url}?after={after}", headers={"Cookie": self.cookie, "Accept": "text/event-stream"}
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    self._read(response)
            except (OSError, urllib.error.URLError) as exc:
                self.errors.append(repr(exc))
            if not self.ended:
                self.reconnects += 1
                time.sleep(0.5)

    def _read(self, response) -> None:
        event_id, name = None, ""
        for raw in response:
            if self._stop.is_set():
                return
            line = raw.decode("utf-8").rstrip("\r\n")
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("event: "):
                name = line[7:]
            elif not line:
                if name == "end":
                    self.ended = True
                    return
                if event_id is not None and name:
                    self.ids.append(event_id)
                event_id, name = None, ""
