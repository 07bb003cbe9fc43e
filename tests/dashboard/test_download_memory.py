"""Downloading a big log keeps the web server's memory bounded, however slowly people read it.

A real web server (the one `manage.py serve` starts) on the test database, a 64 MB log, and ten
clients with small receive buffers that read a few kilobytes a second.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest
from django.test import Client

from spawner.models import RunAttempt
from tests.conftest import ROOT, database_url_for_subprocess

pytestmark = pytest.mark.integration

LOG_MB = 64
SLOW_CLIENTS = 10
WATCH_SECONDS = 12
BOUND_MB = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def big_log(tmp_path, make_batch, member, transactional_db):
    """A run whose attempt has a 64 MB log on this server's disk."""
    run = make_batch(member).runs.get(key="lint")
    path = tmp_path / "big.log"
    line = b"".join(b"%06d the agent says something long enough to fill a line\n" % i for i in range(16384))
    with open(path, "wb") as f:
        while f.tell() < LOG_MB * 2**20:
            f.write(line)
    RunAttempt.objects.filter(run=run, number=run.attempt).update(log_path=str(path))
    return run, path


@pytest.fixture
def web_server(tmp_path, transactional_db):
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url_for_subprocess(), "SPAWNER_LOG_LEVEL": "WARNING"}
    log = open(tmp_path / "web.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "spawner.webserver", "-v", "0", "-b", "127.0.0.1", "-p", str(port)]
        + ["spawner.asgi:application"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.close()
                raise RuntimeError((tmp_path / "web.log").read_text()[-3000:]) from None
            time.sleep(0.1)
    yield proc, port
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def request(port: int, path: str, cookie: str, *, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    s.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".encode()
    )
    return s


def read_all(s: socket.socket) -> bytes:
    chunks = []
    while data := s.recv(1 << 20):
        chunks.append(data)
    return b"".join(chunks)


def test_ten_slow_readers_of_a_big_log_keep_the_server_memory_bounded(big_log, web_server, member):
    run, path = big_log
    proc, port = web_server
    client = Client()
    client.force_login(member)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    url = f"/runs/{run.id}/attempts/{run.attempt}/log/download/"
    server = psutil.Process(proc.pid)
    # Warm up: the run page loads every module a download needs.
    with request(port, f"/runs/{run.id}/", cookie) as s:
        assert b" 200 " in read_all(s)[:20]
    before = server.memory_info().rss

    slow = [request(port, url, cookie, rcvbuf=4096) for _ in range(SLOW_CLIENTS)]
    received = [b"" for _ in slow]
    peak = before
    deadline = time.monotonic() + WATCH_SECONDS
    while time.monotonic() < deadline:
        for i, s in enumerate(slow):
            received[i] += s.recv(2048)  # about 20 KB/s each
        peak = max(peak, server.memory_info().rss)
        time.sleep(0.1)
    grown_mb = (peak - before) / 2**20
    print(f"\nserver RSS before {before / 2**20:.0f} MB, peak {peak / 2**20:.0f} MB, grew {grown_mb:.1f} MB")
    for data in received:
        head, _, body = data.partition(b"\r\n\r\n")
        assert b" 200 " in head.split(b"\r\n")[0], head
        assert f"content-length: {path.stat().st_size}".encode() in head.lower()
        assert path.read_bytes()[: len(body)] == body
    for s in slow:
        s.close()
    assert grown_mb < BOUND_MB

    # A fast reader meanwhile gets the whole log, byte for byte.
    with request(port, url, cookie) as s:
        data = read_all(s)
    body = data.partition(b"\r\n\r\n")[2]
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
    assert proc.poll() is None
