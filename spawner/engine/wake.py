"""Wake-ups: the process that commits work tells the processes waiting for it, so they need not wait
for their next poll. The polls stay, as the fallback for a wake-up that never arrives.

Two channels:
- `DISPATCH`: a queued attempt's message is in the ORM broker (a row written in the launching
  transaction): wake the clusters' pushers. The Redis broker needs none: its pusher blocks on the list.
- `EVENTS`: events are in the log: wake the web processes' relays.

A wake-up is sent after the commit (`after_commit`), once per transaction and channel, and carries
nothing: the waiting side reads the database as it would after a poll, so a lost, late or spurious
wake-up changes when it looks, never what it finds.

Transports, chosen by the deployment:
- one machine (no Redis): a UNIX datagram socket per waiting process, in
  `<SPAWNER_VAR_DIR>/wake/<database>/<channel>/`; the sender writes one byte to each (a full
  socket already holds a wake-up; a socket nobody reads any more is removed);
- with Redis (`REDIS_URL`, several machines): Redis pub/sub, one channel per database and channel.
`SPAWNER_WAKE=off` sends nothing and listens to nothing: the polls alone (tests use it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import select
import socket
import time
import uuid
from functools import cache
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction

log = logging.getLogger(__name__)

DISPATCH = "dispatch"
EVENTS = "events"
CHANNELS = (DISPATCH, EVENTS)


def enabled() -> bool:
    return settings.SPAWNER.get("WAKE", True)


def redis_url() -> str | None:
    return settings.Q_CLUSTER.get("redis") if isinstance(settings.Q_CLUSTER.get("redis"), str) else None


def database_key() -> str:
    """Processes on the same database wake each other, and no one else (tests run side by side)."""
    s = connection.settings_dict
    return _key(connection.vendor, str(s.get("HOST") or ""), str(s.get("PORT") or ""), str(s["NAME"]))


@cache
def _key(*parts: str) -> str:
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


# --- sending -------------------------------------------------------------------------------------


def after_commit(channel: str) -> None:
    """Wake `channel`'s listeners once the current transaction commits (at once outside one)."""
    if not enabled():
        return
    conn = transaction.get_connection()
    if not conn.in_atomic_block:
        nudge(channel)
        return
    callback = _callbacks()[channel]
    if any(entry[1] is callback for entry in conn.run_on_commit):
        return
    transaction.on_commit(callback)


@cache
def _callbacks() -> dict:
    return {channel: (lambda channel=channel: nudge(channel)) for channel in CHANNELS}


def nudge(channel: str) -> None:
    """Wake `channel`'s listeners now. Never raises: a wake-up lost costs one poll, nothing else."""
    if not enabled():
        return
    try:
        if url := redis_url():
            _redis(url, os.getpid()).publish(_redis_channel(channel), b"1")
        else:
            _send_local(channel)
    except Exception:  # the commit it follows has happened; the poll will find the work
        log.debug("wake-up on %s not sent", channel, exc_info=True)


def _redis_channel(channel: str) -> str:
    return f"spawner:wake:{database_key()}:{channel}"


@cache
def _redis(url: str, pid: int):  # one client per process: a forked child makes its own
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)


def _directory(channel: str) -> Path:
    return Path(settings.VAR_DIR) / "wake" / database_key() / channel


@cache
def _sender(pid: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return sock


def _send_local(channel: str) -> None:
    directory = _directory(channel)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    sender = _sender(os.getpid())
    for name in names:
        path = directory / name
        try:
            sender.sendto(b"!", str(path))
        except BlockingIOError:  # its buffer is full: it has wake-ups it has not read yet
            pass
        except ConnectionRefusedError:  # nobody reads it any more: its process is gone
            with contextlib.suppress(OSError):
                path.unlink()
        except OSError:
            pass


# --- listening -----------------------------------------------------------------------------------


class Listener:
    """One process's ear on a channel (local socket or Redis subscription). `wait` blocks until a
    wake-up or the timeout; `fileno` lets an event loop watch it. Create it before the first look at
    the database, so a wake-up sent in between is kept for the next wait."""

    def __init__(self, channel: str):
        self.channel = channel
        self.sock: socket.socket | None = None
        self.path: Path | None = None
        self.pubsub = None
        if not enabled():
            return
        try:
            if url := redis_url():
                self.pubsub = _redis(url, os.getpid()).pubsub(ignore_subscribe_messages=True)
                self.pubsub.subscribe(_redis_channel(channel))
            else:
                self._bind()
        except Exception:
            log.warning("cannot listen for wake-ups on %s; polling only", channel, exc_info=True)
            self.close()

    def _bind(self) -> None:
        directory = _directory(self.channel)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(self.path))
        sock.setblocking(False)
        self.sock = sock

    @property
    def active(self) -> bool:
        return self.sock is not None or self.pubsub is not None

    def fileno(self) -> int | None:
        if self.sock is not None:
            return self.sock.fileno()
        if self.pubsub is not None and self.pubsub.connection is not None:
            return self.pubsub.connection._sock.fileno()
        return None

    def drain(self) -> bool:
        """Read every wake-up waiting; whether there was one."""
        woken = False
        if self.sock is not None:
            while True:
                try:
                    self.sock.recv(64)
                    woken = True
                except (BlockingIOError, InterruptedError):
                    break
        elif self.pubsub is not None:
            try:
                while self.pubsub.get_message(timeout=0) is not None:
                    woken = True
            except Exception:
                log.warning("wake-up subscription on %s lost; polling only", self.channel, exc_info=True)
                self.close()
        return woken

    def wait(self, timeout: float) -> bool:
        """Until a wake-up (True) or `timeout` seconds (False)."""
        if self.drain():
            return True
        if self.pubsub is not None:
            try:
                message = self.pubsub.get_message(timeout=timeout)
            except Exception:
                log.warning("wake-up subscription on %s lost; polling only", self.channel, exc_info=True)
                self.close()
                return False
            if message is None:
                return False
            self.drain()
            return True
        if self.sock is None:
            time.sleep(timeout)
            return False
        ready, _, _ = select.select([self.sock], [], [], timeout)
        return bool(ready) and self.drain()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.path = None
        if self.pubsub is not None:
            with contextlib.suppress(Exception):
                self.pubsub.close()
            self.pubsub = None


class AsyncListener:
    """A listener for an asyncio loop (the relay): `await wait(timeout)`."""

    def __init__(self, channel: str):
        self.channel = channel
        self.event = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.listener: Listener | None = None
        self.task: asyncio.Task | None = None
        if not enabled():
            return
        if redis_url():
            self.task = self.loop.create_task(self._subscribe())
        else:
            self.listener = Listener(channel)
            if self.listener.sock is not None:
                self.loop.add_reader(self.listener.sock.fileno(), self._readable)

    def _readable(self) -> None:
        if self.listener is not None and self.listener.drain():
            self.event.set()

    async def _subscribe(self) -> None:
        """Redis pub/sub on this loop; on a lost connection, subscribe again (the poll covers the gap)."""
        import redis.asyncio as aioredis

        while True:
            client = aioredis.Redis.from_url(redis_url(), socket_connect_timeout=2)
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(await asyncio.to_thread(_redis_channel, self.channel))
                    while True:
                        message = await pubsub.get_message(timeout=5.0)
                        if message is not None:
                            self.event.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("wake-up subscription on %s lost; polling until it is back", self.channel, exc_info=True)
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()

    def poke(self) -> None:
        """Wake the waiter from inside its own process (it has something to do besides reading)."""
        self.event.set()

    async def wait(self, timeout: float) -> bool:
        """Until a wake-up (True) or `timeout` seconds (False)."""
        if not self.event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), timeout)
        woken = self.event.is_set()
        self.event.clear()
        return woken

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.listener is not None:
            if self.listener.sock is not None:
                with contextlib.suppress(Exception):
                    self.loop.remove_reader(self.listener.sock.fileno())
            self.listener.close()
