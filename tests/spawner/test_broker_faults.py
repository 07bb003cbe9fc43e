"""The at-scale shape under broker faults: PostgreSQL, a PRIVATE Redis (its own redis-server on a
free port, stopped and started by the test; the shared one is never touched), real clusters, a real
daphne with the channels-redis layer, and websocket clients.

Each test prints one figure line (runs, fault, time to recover, lost, duplicates); run with -s:
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db> .venv/bin/python -m pytest -m faults \
        tests/spawner/test_broker_faults.py -s
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from spawner.engine import queue, recovery
from spawner.models import AgentRun, RunAttempt
from spawner.states import AttemptStatus, BatchStatus, RunStatus
from tests.conftest import CLUSTER_ENV, ROOT, ClusterProcess, database_url_for_subprocess
from tests.spawner.helpers import launch, wait_batch, wait_for
from tests.spawner.readers import TERMINAL, Watcher, database_view, session_cookie, settled, watch_in_thread

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(300)]
BIG = pytest.mark.timeout(1200)

OUTAGE_SECONDS = 5.0
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of this test's own, on its own port, without persistence (a restart loses what
    it held, as a crashed Redis without AOF would)."""

    def __init__(self, directory: Path):
        self.port = free_port()
        self.dir = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        import redis

        self.dir.mkdir(parents=True, exist_ok=True)
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [*argv, "--dir", str(self.dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        wait_for(lambda: _pings(client), 20, f"the private redis-server on port {self.port}")

    def stop(self) -> None:
        """Gone at once, as a crash or a restart takes it: connections refused until it is back."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _pings(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class Shape:
    """PostgreSQL + the private Redis, with clusters (and a web server) started on demand."""

    def __init__(self, tmp: Path, redis: PrivateRedis, env: dict[str, str]):
        self.tmp = tmp
        self.redis = redis
        self.env = env
        self.processes: list = []

    def cluster(self, name: str, **extra: str) -> ClusterProcess:
        c = ClusterProcess({**self.env, **extra}, self.tmp / f"{name}.log")
        self.processes.append(c)
        c.start()
        return c

    def web(self):
        """daphne as `serve` runs it, but with a longer websocket handshake limit than its 5 s: on this
        shared 2-core machine (load 20) fifty readers' first connects queue behind one another."""
        from tests.browser.conftest import WebServer, free_port

        server = WebServer.__new__(WebServer)
        server.port = free_port()
        server.url = f"http://127.0.0.1:{server.port}"
        server.log_path = self.tmp / "daphne.log"
        server.log = open(server.log_path, "ab")  # noqa: SIM115 - closed by server.stop()
        argv = [sys.executable, "-m", "spawner.webserver", "-b", "127.0.0.1", "-p", str(server.port)]
        server.proc = subprocess.Popen(
            [*argv, "--websocket_connect_timeout", "60", "spawner.asgi:application"],
            env={**self.env, "SPAWNER_WORKDIR": str(self.tmp)},
            cwd=ROOT,
            stdout=server.log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(server)
        server.wait_ready(timeout=60)
        return server

    def outage(self, seconds: float = OUTAGE_SECONDS, during=None) -> float:
        """Stop Redis for `seconds` (calling `during()` meanwhile); the monotonic time it was back."""
        self.redis.stop()
        down = time.monotonic()
        if during:
            during()
        time.sleep(max(0.0, seconds - (time.monotonic() - down)))
        self.redis.start()
        return time.monotonic()


@pytest.fixture
def shape(transactional_db, tmp_path, settings, monkeypatch):
    from django.db import connection
    from django_q.conf import Conf

    if connection.vendor != "postgresql":
        pytest.skip("the fault suite runs on PostgreSQL + Redis: set DATABASE_URL=postgres://...")
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is missing: apt-get install -y redis-server")
    redis = PrivateRedis(tmp_path / "redis")
    redis.start()
    # This test process launches through the same broker as the clusters: the private Redis.
    q = {k: v for k, v in django_settings.Q_CLUSTER.items() if k != "orm"}
    settings.Q_CLUSTER = {**q, "redis": redis.url, "broker_class": "spawner.engine.broker.Redis"}
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", redis.url)
    monkeypatch.setattr(Conf, "BROKER_CLASS", "spawner.engine.broker.Redis")
    monkeypatch.setattr(recovery, "_broker", None)
    queue.reset_broker()
    log_dir, workspace_dir = tmp_path / "logs", tmp_path / "workspaces"
    settings.SPAWNER = {**settings.SPAWNER, "LOG_DIR": log_dir, "WORKSPACE_DIR": workspace_dir}
    env = {
        **os.environ,
        **CLUSTER_ENV,
        "DATABASE_URL": database_url_for_subprocess(),
        "REDIS_URL": redis.url,
        "SPAWNER_LOG_DIR": str(log_dir),
        "SPAWNER_WORKSPACE_DIR": str(workspace_dir),
        "SPAWNER_OUTBOX_POLL_SECONDS": "0.2",
        "SPAWNER_OUTBOX_RETRY_SECONDS": "0.2",
        "SPAWNER_OUTBOX_RETRY_MAX_SECONDS": "1",
    }
    s = Shape(tmp_path, redis, env)
    try:
        yield s
    finally:
        for p in reversed(s.processes):
            p.stop()
        redis.stop()
        queue.reset_broker()
        _no_other_sessions()


def _no_other_sessions(timeout: float = 15) -> None:
    """Killed processes' PostgreSQL sessions may still run a statement: wait for them (then end them),
    so the test database can be flushed."""
    from django.db import connection

    others = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while True:
            cursor.execute(others)
            pids = [row[0] for row in cursor.fetchall()]
            if not pids or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for pid in pids:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])


def stamped(marks: Path, key: str) -> int:
    """How many times the agent of `key` started (each start appends its own line)."""
    path = marks / key
    return len(path.read_text().split()) if path.exists() else 0


def figures(batch, marks: Path | None = None) -> tuple[int, int]:
    """(lost attempts, runs executed more than once by their own stamps)."""
    lost = RunAttempt.objects.filter(run__batch=batch, status=AttemptStatus.LOST).count()
    dupes = sum(stamped(marks, r.key) > 1 for r in batch.runs.all()) if marks else 0
    return lost, dupes


def gate(path: Path) -> str:
    """An agent command that waits until the test creates `path` (bounded: 120 s)."""
    return f"for i in $(seq 1200); do [ -e {path} ] && break; sleep 0.1; done"


def two_waves(n: int, marks: Path, first: str) -> str:
    """Wave 1: n tasks; wave 2: n tasks, each after one of the first. Every agent stamps its start."""
    lines = [f"name: waves\nagent: sh\nmax_parallel: {2 * n}\nretries: 0\ntasks:"]
    for i in range(n):
        lines.append(f"  - {{key: a{i}, prompt: 'echo x >> {marks}/a{i}; {first}'}}")
    for i in range(n):
        lines.append(f"  - {{key: b{i}, prompt: 'echo x >> {marks}/b{i}', depends_on: [a{i}]}}")
    return "\n".join(lines) + "\n"


def test_the_next_wave_is_sent_when_redis_is_back(shape, agent_types, tmp_path):
    """Redis goes down while wave 1 runs: wave 2 is queued during the outage (its messages owed,
    not lost), sent when Redis is back, and the batch completes with nothing lost or run twice."""
    cluster = shape.cluster("c1")
    marks = tmp_path / "marks"
    marks.mkdir()
    n = 10
    go = tmp_path / "go"
    batch = launch(two_waves(n, marks, gate(go)), tmp_path)
    wave1 = AgentRun.objects.filter(batch=batch, key__startswith="a")
    wait_for(lambda: wave1.filter(status=RunStatus.RUNNING).count() == n, 60, "wave 1 to run")

    owed = RunAttempt.objects.filter(run__batch=batch, run__key__startswith="b", send_due__isnull=False)
    seen = {}

    def during():
        go.touch()  # wave 1 ends while Redis is down
        wait_for(lambda: owed.count() == n, 30, "wave 2 to be queued while Redis is down, its messages owed")
        seen["owed"] = owed.count()

    back = shape.outage(during=during)
    wave2 = AgentRun.objects.filter(batch=batch, key__startswith="b")
    wait_for(lambda: not wave2.filter(status=RunStatus.QUEUED).exists(), 60, "wave 2 to start after the outage")
    recovered = time.monotonic() - back
    batch = wait_batch(batch, timeout=60)
    lost, dupes = figures(batch, marks)
    print(
        f"\nFIGURE redis-down-mid-batch: runs={2 * n} fault=Redis stopped {OUTAGE_SECONDS:.0f} s between waves "
        f"owed={seen['owed']} recover={recovered:.2f} s (Redis back -> every owed run started) "
        f"lost={lost} duplicates={dupes}"
    )
    assert seen["owed"] == n
    assert batch.status == BatchStatus.SUCCEEDED, batch.status
    assert lost == 0 and dupes == 0
    assert all(stamped(marks, r.key) == 1 for r in batch.runs.all())
    assert not RunAttempt.objects.filter(run__batch=batch, send_due__isnull=False).exists(), "all acknowledged"
    assert cluster.proc.poll() is None, "the cluster rode the outage out"
    assert recovered < 15, "within the loop's capped backoff and a generous margin"


def test_a_launch_during_the_outage_is_stored_and_starts_when_redis_is_back(shape, agent_types, tmp_path):
    """Through the services (browser, API) and the real `manage.py spawn --wait` CLI: no raw
    ConnectionError, the batch is stored, and it completes after Redis returns."""
    shape.cluster("c1")
    marks = tmp_path / "marks"
    marks.mkdir()
    spec = "name: during\nagent: sh\nmax_parallel: 5\nretries: 0\ntasks:\n" + "".join(
        f"  - {{key: t{i}, prompt: 'echo x >> {marks}/t{i}'}}\n" for i in range(5)
    )
    cli_marks = tmp_path / "cli-marks"
    cli_marks.mkdir()
    spec_file = tmp_path / "cli.yaml"
    spec_file.write_text(spec.replace(str(marks), str(cli_marks)).replace("name: during", "name: during-cli"))
    out = {}

    def during():
        out["batch"] = launch(spec, tmp_path)  # services.batch_launch: must not raise
        out["cli"] = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "spawn", str(spec_file), "--wait"],
            env=shape.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        batch = out["batch"]
        assert batch.runs.count() == 5
        cli_owed = RunAttempt.objects.filter(run__batch__name="during-cli", send_due__isnull=False)
        try:
            wait_for(lambda: cli_owed.count() == 5 or out["cli"].poll() is not None, 30, "the CLI's launch")
        finally:
            if out["cli"].poll() is not None:
                pytest.fail(f"spawn ended during the outage:\n{out['cli'].communicate()[0]}")
        out["owed"] = RunAttempt.objects.filter(run__batch=batch, send_due__isnull=False).count()

    back = shape.outage(during=during)
    batch = wait_batch(out["batch"], timeout=60)
    recovered = time.monotonic() - back
    cli_out, _ = out["cli"].communicate(timeout=90)
    cli_batch = batch.__class__.objects.get(name="during-cli")
    lost, dupes = figures(batch, marks)
    cli_lost, cli_dupes = figures(cli_batch, cli_marks)
    print(
        f"\nFIGURE launch-during-redis-outage: runs=5 (services) + 5 (manage.py spawn --wait) fault=Redis stopped "
        f"{OUTAGE_SECONDS:.0f} s, launched while down, recover={recovered:.2f} s (Redis back -> batch ended) "
        f"lost={lost + cli_lost} duplicates={dupes + cli_dupes}"
    )
    assert out["owed"] == 5
    assert batch.status == BatchStatus.SUCCEEDED
    assert out["cli"].returncode == 0, cli_out
    assert "Traceback" not in cli_out and "ConnectionError" not in cli_out, cli_out
    assert cli_batch.status == BatchStatus.SUCCEEDED
    assert lost + cli_lost == 0 and dupes + cli_dupes == 0


def test_clusters_and_the_web_server_recover_by_themselves_after_a_redis_restart(shape, agent_types, tmp_path):
    """Redis restarts while a websocket reader watches a running batch: the clusters (their q2
    pushers) and daphne (its channels-redis layer) come back on their own, nobody restarts them; the
    batch completes and the reader's page ends equal to the database."""
    clusters = [shape.cluster("c1"), shape.cluster("c2")]
    pids = [c.proc.pid for c in clusters]
    web = shape.web()
    marks = tmp_path / "marks"
    marks.mkdir()
    n = 10
    go = tmp_path / "go"
    batch = launch(two_waves(n, marks, gate(go)), tmp_path)
    ws_url = web.url.replace("http://", "ws://") + f"/ws/batches/{batch.id}/"
    cookie = session_cookie()
    watchers = [Watcher(ws_url, web.url, cookie) for _ in range(3)]
    _thread, stop = watch_in_thread(watchers, timeout=200)
    try:
        try:
            wait_for(lambda: all(w.status == "running" for w in watchers), 60, "the readers' snapshots")
        except AssertionError:
            pytest.fail(f"no snapshot: {watchers[0].errors[-3:]}\n{(tmp_path / 'daphne.log').read_text()[-3000:]}")
        wave1 = AgentRun.objects.filter(batch=batch, key__startswith="a")
        wait_for(lambda: wave1.filter(status=RunStatus.RUNNING).count() == n, 60, "wave 1 to run")
        back = shape.outage(during=go.touch)
        wait_for(lambda: batch.__class__.objects.get(id=batch.id).status in TERMINAL, 90, "the batch to end")
        ended = time.monotonic() - back
        # A batch launched after the restart starts promptly: the pushers pull again.
        (tmp_path / "after").mkdir()
        after = launch(two_waves(2, tmp_path / "after", "true").replace("name: waves", "name: after"), tmp_path)
        wait_batch(after, timeout=60)
        wait_for(lambda: settled(watchers, batch), 60, "every reader's page to equal the database")
    finally:
        stop()
    batch.refresh_from_db()
    lost, dupes = figures(batch, marks)
    reconnects = sum(w.reconnects for w in watchers)
    print(
        f"\nFIGURE redis-restart: runs={2 * n} clusters=2 web=1 readers={len(watchers)} fault=Redis stopped "
        f"{OUTAGE_SECONDS:.0f} s mid-batch, recover={ended:.2f} s (Redis back -> batch ended) "
        f"reader reconnects={reconnects} lost={lost} duplicates={dupes}"
    )
    assert batch.status == BatchStatus.SUCCEEDED
    assert after.status == BatchStatus.SUCCEEDED
    assert [c.proc.pid for c in clusters] == pids and all(c.proc.poll() is None for c in clusters)
    assert web.proc.poll() is None
    assert lost == 0 and dupes == 0


@BIG
def test_a_thousand_runs_watched_by_fifty_websocket_readers_end_equal_to_the_database(shape, agent_types, tmp_path):
    """1,000 runs of `true` on two clusters, 50 readers on the batch page from before the first run
    starts: every run ends, and every reader's final page equals the database."""
    shape.cluster("c1")
    shape.cluster("c2")
    web = shape.web()
    n = 1000
    # A first run holds the rest back until every reader watches; then 999 at once.
    go = tmp_path / "go"
    tasks = [f"  - {{key: gate, prompt: '{gate(go)}'}}"]
    tasks += [f"  - {{key: t{i}, prompt: 'true', depends_on: [gate]}}" for i in range(1, n)]
    spec = "name: thousand\nagent: sh\nmax_parallel: 256\nretries: 1\ntasks:\n" + "\n".join(tasks) + "\n"
    batch = launch(spec, tmp_path)
    ws_url = web.url.replace("http://", "ws://") + f"/ws/batches/{batch.id}/"
    cookie = session_cookie()
    watchers = [Watcher(ws_url, web.url, cookie) for _ in range(50)]
    _thread, stop = watch_in_thread(watchers, timeout=1150)
    try:
        connecting = time.monotonic()
        try:
            wait_for(lambda: all(len(w.rows) == n for w in watchers), 240, "every reader's snapshot of 1,000 rows")
        except AssertionError:
            sizes = sorted(len(w.rows) for w in watchers)
            errors = [e for w in watchers for e in w.errors][:3]
            pytest.fail(f"snapshots: rows seen {sizes}, messages {sum(w.messages for w in watchers)}, errors {errors}")
        snapshots = time.monotonic() - connecting
        go.touch()
        began = time.monotonic()
        batch = wait_batch(batch, timeout=900)  # minutes only when the machine is shared (load 20-30 on 2 cores)
        wall = time.monotonic() - began
        wait_for(lambda: settled(watchers, batch), 60, "every reader's page to equal the database")
        caught_up = time.monotonic() - began - wall
    finally:
        stop()
    rows, status = database_view(batch)
    lost = RunAttempt.objects.filter(run__batch=batch, status=AttemptStatus.LOST).count()
    retried = AgentRun.objects.filter(batch=batch, attempt__gt=1).count()
    messages = sum(w.messages for w in watchers)
    print(
        f"\nFIGURE thousand-runs-fifty-readers: runs={n} clusters=2 readers=50 fault=none "
        f"snapshots of 1,000 rows for 50 readers={snapshots:.1f} s "
        f"batch wall={wall:.1f} s readers equal to the database {caught_up:.1f} s after it ended "
        f"messages={messages} reconnects={sum(w.reconnects for w in watchers)} lost={lost} retried={retried}"
    )
    assert status == BatchStatus.SUCCEEDED
    assert all(s == RunStatus.SUCCEEDED for s, _ in rows.values())
    assert all(w.rows == rows and w.status == status for w in watchers)
    assert lost == 0
