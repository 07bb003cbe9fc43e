"""A slow reader of a batch's event stream keeps the web server's memory bounded.

The real web server (`manage.py serve`'s daphne with backpressure) on the test database, a running
batch with a long event log (about 12 MB as Server-Sent Events), and a client with a small
receive buffer that reads a few kilobytes a second: the server reads the log only as fast as it
takes it. A fast reader meanwhile gets every event, and the stream ends when the batch does.
"""

from __future__ import annotations

import time

import psutil
import pytest
from django.test import Client

from spawner.models import Batch, RunEvent
from tests.dashboard.test_download_memory import read_all, request, web_server  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = 60_000
SLOW_CLIENTS = 1
WATCH_SECONDS = 20
# Measured on the 2-core machine: this server grew 2.3 MB; plain daphne (no backpressure), which
# buffers what the client has not read, 9.0 MB in 15 s and more the longer the client dawdles.
BOUND_MB = 5


def dechunk(body: bytes, *, partial: bool = False) -> bytes:
    """An HTTP/1.1 chunked body's content (what arrived of it, when `partial`)."""
    out, at = [], 0
    while at < len(body):
        end = body.find(b"\r\n", at)
        if end < 0:
            break
        size = int(body[at:end], 16)
        if size == 0:
            break
        out.append(body[end + 2 : end + 2 + size])
        at = end + 2 + size + 2
    else:
        return b"".join(out)
    assert partial or size == 0, "the chunked body was cut short"
    return b"".join(out)


@pytest.fixture
def long_log(make_batch, member, transactional_db):
    batch = make_batch(member)
    run = batch.runs.get(key="build")
    RunEvent.objects.bulk_create(
        (RunEvent(batch=batch, run=run, attempt=1, kind="run.output", data={"bytes": i}) for i in range(EVENTS)),
        batch_size=5000,
    )
    return batch


def test_slow_readers_of_the_event_stream_keep_the_server_memory_bounded(long_log, web_server, member):  # noqa: F811
    proc, port = web_server
    print(f"\n{EVENTS} events logged")
    client = Client()
    client.force_login(member)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    server = psutil.Process(proc.pid)
    url = f"/api/batches/{long_log.id}/events"
    outputs = RunEvent.objects.filter(batch=long_log, kind="run.output").order_by("id")
    first = outputs.values_list("id", flat=True).first()
    # Warm up: a whole stream of the tail of the log, which loads every module a stream needs.
    Batch.objects.filter(id=long_log.id).update(status="succeeded")
    with request(port, f"{url}?after={first + EVENTS - 10}", cookie) as s:
        assert b"event: end" in read_all(s)
    Batch.objects.filter(id=long_log.id).update(status="running")
    before = server.memory_info().rss

    slow = [request(port, f"{url}?after=0", cookie, rcvbuf=4096) for _ in range(SLOW_CLIENTS)]
    received = [b"" for _ in slow]
    peak = before
    deadline = time.monotonic() + WATCH_SECONDS
    while time.monotonic() < deadline:
        for i, s in enumerate(slow):
            received[i] += s.recv(2048)
        peak = max(peak, server.memory_info().rss)
        time.sleep(0.1)
    grown_mb = (peak - before) / 2**20
    print(f"\nserver RSS before {before / 2**20:.0f} MB, peak {peak / 2**20:.0f} MB, grew {grown_mb:.1f} MB")
    for data in received:
        head, _, body = data.partition(b"\r\n\r\n")
        assert b" 200 " in head.split(b"\r\n")[0] and b"text/event-stream" in head.lower(), head
        assert f"id: {first}\nevent: run.output\n".encode() in dechunk(body, partial=True)
    for s in slow:
        s.close()
    assert grown_mb < BOUND_MB

    # A fast reader gets every event, in order, and the end once the batch has ended.
    reader = request(port, f"{url}?after=0", cookie)
    Batch.objects.filter(id=long_log.id).update(status="succeeded")
    started = time.monotonic()
    with reader as s:
        body = read_all(s).partition(b"\r\n\r\n")[2]
    print(f"a fast reader got {EVENTS} events in {time.monotonic() - started:.1f} s")
    text = dechunk(body).decode()
    assert text.count("event: run.output\n") == EVENTS and text.rstrip().endswith('data: {"status":"succeeded"}')
    assert proc.poll() is None
