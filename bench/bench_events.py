"""Event latency: a run's state change committed -> its fragment received by a websocket client.

A real daphne serves spawner.asgi on a throwaway SQLite database (the embedded default);
websocket clients watch one batch page; this process commits state changes the way the
engine does (the run row and its event in one transaction) and times each change until
every client has received the row fragment that shows it.

    .venv/bin/python bench/bench_events.py [--changes 500] [--clients 1] [--runs 20]
    .venv/bin/python bench/bench_events.py --wake-baseline --busy      # polls only, then wake-ups; beside a load
    .venv/bin/python bench/bench_events.py --database-url postgres://postgres@127.0.0.1:5432/test \
        --redis-url redis://127.0.0.1:6379/15                           # the at-scale shape

Prints p50/p95; asserts nothing (goal from issue 13: p95 within 40 ms). With --wake-baseline the
same changes are first measured with wake-ups off (SPAWNER_WAKE=off: the relay's poll alone) on a
daphne of their own, in the same process, so the two figures share the machine's load.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc  # noqa: E402


class WebSocket:
    """Just enough of RFC 6455 to read text messages from a server (and answer its pings)."""

    def __init__(self, host: str, port: int, path: str, cookie: str):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://{host}:{port}\r\n"
            f"Cookie: {cookie}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"websocket refused: {head.decode(errors='replace')}")
        self.sock.settimeout(None)

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def receive(self) -> str:
        parts = []
        while True:
            first, second = self._read(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack("!H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self._read(8))[0]
            payload = self._read(length)
            opcode = first & 0x0F
            if opcode == 0x9:
                self._send(0xA, payload)
            elif opcode == 0x8:
                raise ConnectionError("closed by the server")
            elif opcode in (0x0, 0x1):
                parts.append(payload)
                if first & 0x80:
                    return b"".join(parts).decode()

    def close(self) -> None:
        self.sock.close()


class Listener(threading.Thread):
    """Records when each marker first arrives on one websocket."""

    def __init__(self, ws: WebSocket):
        super().__init__(daemon=True)
        self.ws = ws
        self.seen: dict[str, float] = {}
        self.wanted: str | None = None
        self.arrived = threading.Event()
        self.messages = 0

    def run(self) -> None:
        try:
            while True:
                text = self.ws.receive()
                now = time.perf_counter()
                self.messages += 1
                wanted = self.wanted
                if wanted and wanted in text and wanted not in self.seen:
                    self.seen[wanted] = now
                    self.arrived.set()
        except (ConnectionError, OSError):
            return


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_daphne(env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "spawner.asgi:application"],
        env=env,
        cwd=bc.ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=2).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("daphne did not start")


def change(run, i: int) -> float:
    """One state change as the engine writes it; returns when it committed."""
    from django.db import transaction

    from spawner.engine import events
    from spawner.models import AgentRun

    status = "running" if i % 2 == 0 else "queued"
    with transaction.atomic():
        AgentRun.objects.filter(id=run.id).update(status=status, error=f"bench-mark-{i}-")
        events.record(batch_id=run.batch_id, run_id=run.id, attempt=1, kind=f"run.{status}", status=status)
    return time.perf_counter()


def burst(listener: Listener, runs, count: int, start: int) -> None:
    """Changes as fast as one writer commits them: how many messages, how long until the last shows."""
    last = f"bench-mark-{start + count - 1}-"
    listener.wanted, before = last, listener.messages
    listener.arrived.clear()
    t0 = time.perf_counter()
    for i in range(start, start + count):
        committed = change(runs[i % len(runs)], i)
    listener.arrived.wait(30)
    arrived = listener.seen.get(last)
    time.sleep(1.0)
    print(f"\nburst: {count} changes committed back to back in {committed - t0:.2f} s")
    if arrived is None:
        print("  the last change did not arrive within 30 s")
        return
    print(
        f"  last change on screen {bc.ms(arrived - committed)} after its commit; "
        f"{listener.messages - before} websocket messages carried all {count} changes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=500)
    parser.add_argument("--clients", type=int, default=1, help="websocket clients watching the batch")
    parser.add_argument("--runs", type=int, default=20, help="runs in the watched batch")
    parser.add_argument("--burst", type=int, default=0, help="then commit this many changes back to back")
    parser.add_argument("--database-url", help="postgres://... for a throwaway PostgreSQL database")
    parser.add_argument("--redis-url", help="channel layer and wake-ups through this Redis (use a spare db number)")
    parser.add_argument("--wake-baseline", action="store_true", help="first measure with wake-ups off (polls only)")
    parser.add_argument(
        "--busy",
        nargs="?",
        type=int,
        const=os.cpu_count() or 1,
        default=0,
        metavar="N",
        help="run N CPU-bound spinning processes beside the bench (default N: one per core)",
    )
    args = parser.parse_args()

    env = bc.setup(database_url=args.database_url, redis_url=args.redis_url)
    busy = bc.Busy(args.busy) if args.busy else None
    try:
        from django.conf import settings

        results = {}
        for wake in ("off", "on") if args.wake_baseline else ("on" if settings.SPAWNER["WAKE"] else "off",):
            settings.SPAWNER["WAKE"] = wake == "on"
            print(f"\n== wake-ups {wake}" + (f", beside {args.busy} CPU-bound spinners" if busy else ""))
            results[wake] = measure(args, {**env, "SPAWNER_WAKE": wake})
        if len(results) == 2 and results["off"] and results["on"]:
            print("\nsame process, same machine: wake-ups on / polls only")
            for q in (50, 95):
                on, off = bc.pct(results["on"], q), bc.pct(results["off"], q)
                print(f"  p{q}: {bc.ms(on)} / {bc.ms(off)} = {on / off:.2f}")
        print("\ncommand: .venv/bin/python bench/bench_events.py " + " ".join(sys.argv[1:]))
    finally:
        if busy:
            busy.stop()
        bc.cleanup()


def measure(args, env: dict[str, str]) -> list[float]:
    """One daphne with `env`, one batch, `args.changes` timed changes; returns the latencies."""
    proc = None
    sockets: list[WebSocket] = []
    try:
        from django.conf import settings
        from django.contrib.auth.models import User
        from django.test import Client

        from spawner import services
        from spawner.models import AgentType

        print(f"machine: {bc.machine()}")
        print(f"backend: {bc.describe_backend()}, relay poll {settings.DASHBOARD['RELAY_POLL_SECONDS'] * 1000:.0f} ms")
        AgentType.objects.get_or_create(name="bench-sh", defaults={"argv": ["sh", "-c", "{prompt}"]})
        user = User.objects.filter(username="bench").first() or User.objects.create_user(
            "bench", password="bench-password"
        )
        text = "name: latency\nagent: bench-sh\nmax_parallel: 1\ntasks:\n" + "".join(
            f"  - {{key: t{i}, prompt: 'true'}}\n" for i in range(args.runs)
        )
        batch = services.batch_launch(
            batch_spec=services.spec_load(text, is_admin=True), base_dir=bc.ROOT, owner=user, spec_text=text
        )
        runs = list(batch.runs.order_by("order"))
        client = Client()
        client.force_login(user)
        cookie = f"sessionid={client.cookies['sessionid'].value}"

        proc, port = start_daphne(env)
        listeners = []
        for _ in range(args.clients):
            ws = WebSocket("127.0.0.1", port, f"/ws/batches/{batch.id}/", cookie)
            sockets.append(ws)
            listener = Listener(ws)
            listener.start()
            listeners.append(listener)
        time.sleep(1.0)  # snapshots delivered, relay running

        latencies, lost = [], 0
        for i in range(args.changes):
            marker = f"bench-mark-{i}-"
            for listener in listeners:
                listener.wanted = marker
                listener.arrived.clear()
            committed = change(random.choice(runs), i)
            deadline = time.perf_counter() + 5
            for listener in listeners:
                listener.arrived.wait(max(0.0, deadline - time.perf_counter()))
            arrivals = [listener.seen.get(marker) for listener in listeners]
            if None in arrivals:
                lost += 1
                continue
            latencies.append(max(arrivals) - committed)
            time.sleep(random.uniform(0, 0.05))  # do not ride the relay's poll in phase

        print()
        print(f"{args.changes} state changes, {args.clients} client(s) watching a {args.runs}-run batch")
        rows = [
            ("p50", bc.ms(bc.pct(latencies, 50))),
            ("p95", bc.ms(bc.pct(latencies, 95))),
            ("p99", bc.ms(bc.pct(latencies, 99))),
            ("max", bc.ms(max(latencies))),
            ("mean", bc.ms(bc.mean(latencies))),
            ("not received within 5 s", str(lost)),
        ]
        print(bc.table(rows, ("commit -> fragment at the last client", "")))
        if args.burst:
            burst(listeners[0], runs, args.burst, start=args.changes)
        return latencies
    finally:
        for ws in sockets:
            ws.close()
        if proc:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
