"""Fault injection at scale, on PostgreSQL + Redis: clusters on simulated hosts (SPAWNER_HOST), a
batch of short agents, and one fault each: a kill -9 of one of three clusters, a partition of one of
two (SIGSTOP longer than the lease, then SIGCONT), a PostgreSQL restart plus the loss of every
connection (on a private PostgreSQL instance, two clusters).

Each agent stamps its own start and progress (run key, process group, time) into one file; two
stretches of the same run that overlap would be a run executed twice at the same time. Each test
prints one `faults:` line with its figures (run with -s to see them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
from django.db import InterfaceError, OperationalError, connection

from spawner import services
from spawner.models import AgentRun, AgentType, RunAttempt, RunEvent, WorkerHeartbeat
from spawner.states import RUN_TERMINAL, AttemptStatus, BatchStatus, RunStatus
from tests.browser.conftest import WebServer
from tests.conftest import CLUSTER_ENV, ROOT
from tests.spawner.helpers import launch
from tests.spawner.readers import EventReader, Watcher, session_cookie, settled, watch_in_thread

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(300)]

LEASE = 8.0
FAULT_ENV = {
    **CLUSTER_ENV,
    "SPAWNER_LEASE_SECONDS": str(LEASE),
    "SPAWNER_HEARTBEAT_SECONDS": "1",
    "SPAWNER_REAPER_SECONDS": "1",
    "SPAWNER_POLL_SECONDS": "0.1",
    "SPAWNER_OUTPUT_SECONDS": "2",
    "SPAWNER_WORKERS": "20",
    "SPAWNER_DRAIN_SECONDS": "2",
}
DB_GONE = (OperationalError, InterfaceError)


@pytest.fixture(autouse=True)
def _postgres_and_redis():
    if connection.vendor != "postgresql" or not os.environ.get("REDIS_URL"):
        pytest.skip("the fault suite runs on PostgreSQL + Redis (make test-faults)")


class Cluster:
    """`manage.py spawner_cluster` as one simulated machine, in a session of its own (so the whole
    cluster can be killed or stopped as a group, as a host's crash or a partition would)."""

    def __init__(self, host: str, env: dict[str, str], log_path: Path):
        self.host, self.env, self.log_path = host, {**env, "SPAWNER_HOST": host}, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "spawner_cluster"],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"cluster {self.host} died at start:\n{self.log_path.read_text()[-3000:]}")
        return WorkerHeartbeat.objects.filter(host=self.host, pid=self.proc.pid).exclude(state="starting").exists()

    def processes(self) -> list[psutil.Process]:
        """The cluster's own processes (its agents run in sessions of their own)."""
        return [p for p in psutil.process_iter() if _sid(p.pid) == self.proc.pid]

    def kill_all(self) -> None:
        """kill -9 of every process of the cluster at once (its session: q2's processes may not all
        stay in its process group), as a crash of the machine's cluster would; its agents live on."""
        self.signal_all(signal.SIGKILL)
        self.proc.wait(timeout=10)
        wait(lambda: not self.processes(), 10, f"every process of {self.host} to die")

    def signal_all(self, sig: int) -> None:
        for p in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(sig)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.signal_all(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.signal_all(signal.SIGKILL)
        self.signal_all(signal.SIGKILL)  # anything of its session left behind
        self.log.close()


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except (ProcessLookupError, PermissionError):
        return None


@pytest.fixture
def fault_env(private_postgres, tmp_path, settings):
    """The clusters' environment, on a PostgreSQL of the test's own (it may be restarted; and three
    clusters of 20 workers need more connections than a shared server may spare)."""
    log_dir = tmp_path / "logs"
    settings.SPAWNER = {**settings.SPAWNER, "LOG_DIR": log_dir, "LEASE_SECONDS": LEASE}
    AgentType.objects.get_or_create(name="bash", defaults={"argv": ["bash", "-c", "{prompt}"]})
    return {
        **os.environ,
        **FAULT_ENV,
        "DATABASE_URL": private_postgres["url"],
        "SPAWNER_LOG_DIR": str(log_dir),
        "SPAWNER_WORKSPACE_DIR": str(tmp_path / "workspaces"),
    }


@pytest.fixture
def clusters(tmp_path):
    """start(env, "host-a", "host-b", ...): clusters started side by side, ready; stopped after the test."""
    started: list[Cluster] = []

    def start(env: dict[str, str], *hosts: str) -> list[Cluster]:
        new = [Cluster(h, env, tmp_path / f"cluster-{h}.log") for h in hosts]
        started.extend(new)
        for c in new:
            c.start()
        wait(lambda: all(c.ready() for c in new), 90, "the clusters to start")
        return new

    yield start
    for c in started:
        c.stop()


def wait(predicate, timeout: float, what: str, step: float = 0.1):
    """Wait for `predicate`; a query that meets a database on its way back is asked again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := predicate():
                return value
        except DB_GONE:
            connection.close()
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stamping_spec(n: int, stamps: Path, *, retries: int, parallel: int, seconds: float, long_every: int = 0) -> str:
    """n runs of a bash agent that stamps "key pgid time" at its start and every 0.2 s (builtins only;
    a sleep per step), so the stamps of a killed agent end within 0.2 s of its death. Every
    `long_every`-th run lasts longer than the lease: a fault meets it running (and it is fenced)."""

    def body(i: int) -> str:
        steps = max(1, round((LEASE if long_every and i % long_every == 0 else seconds) / 0.2))
        return (
            "read -r _ _ _ _ pg _ < /proc/$$/stat; "
            f"printf '%s %s %s\\n' t{i} $pg $EPOCHREALTIME >> {stamps}; "
            f"for i in $(seq {steps}); do sleep 0.2; printf '%s %s %s\\n' t{i} $pg $EPOCHREALTIME >> {stamps}; done"
        )

    tasks = [{"key": f"t{i}", "prompt": body(i)} for i in range(n)]
    spec = {"name": "faults", "agent": "bash", "max_parallel": parallel, "retries": retries, "backoff": 0.1}
    return json.dumps({**spec, "tasks": tasks})


def stretches(stamps: Path) -> dict[str, list[tuple[float, float]]]:
    """Per run key, the (first, last) stamp of each agent process group that ran it."""
    seen: dict[tuple[str, str], list[float]] = defaultdict(list)
    for line in stamps.read_text().splitlines():
        key, pgid, at = line.split()
        seen[key, pgid].append(float(at))
    runs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (key, _), times in seen.items():
        runs[key].append((min(times), max(times)))
    return runs


def overlaps(runs: dict[str, list[tuple[float, float]]]) -> tuple[int, float]:
    """(runs executed twice at the same time, the smallest gap in s between a run's two executions)."""
    twice, gap = 0, float("inf")
    for spans in runs.values():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            twice += start < end
            gap = min(gap, start - end)
    return twice, gap


def terminal(batch) -> int:
    return AgentRun.objects.filter(batch=batch, status__in=RUN_TERMINAL).count()


def events_complete(batch) -> list[str]:
    """Every attempt that started has its `run.running` event, every attempt that ended its end event."""
    missing = []
    events = set(RunEvent.objects.filter(batch=batch).values_list("run_id", "attempt", "kind"))
    for a in RunAttempt.objects.filter(run__batch=batch).exclude(started_at=None):
        if (a.run_id, a.number, "run.running") not in events:
            missing.append(f"run.running of attempt {a.id}")
        if (
            a.status != AttemptStatus.RUNNING
            and not {
                (a.run_id, a.number, f"attempt.{a.status}"),
                (a.run_id, a.number, f"run.{a.status}"),
            }
            & events
        ):
            missing.append(f"the end ({a.status}) of attempt {a.id}")
    return missing


def dump_sessions() -> None:
    """What each database session waits for, and which local process it belongs to (a failure's clue)."""
    ports = {c.laddr.port: c.pid for c in psutil.net_connections("tcp") if c.raddr and c.pid}
    with connection.cursor() as cur:
        cur.execute(
            "SELECT pid, state, pg_blocking_pids(pid), client_port, now() - xact_start, left(query, 60) "
            "FROM pg_stat_activity WHERE datname = current_database() AND state <> 'idle'"
        )
        for pid, state, blockers, port, age, query in cur.fetchall():
            local = ports.get(port)
            with contextlib.suppress(psutil.Error):
                local = (local, os.getsid(local), psutil.Process(local).status()) if local else None
            print(f"session {pid} {state} blocked by {blockers} for {age}: {query!r} from {local}")
    for a in RunAttempt.objects.filter(status=AttemptStatus.RUNNING).values_list("id", "host", "heartbeat_at"):
        print("running", a)
    print("clusters", list(WorkerHeartbeat.objects.values_list("host", "pid", "seen_at")))


def running_long(attempts) -> int:
    """How many of these long agents really run (an attempt stays `running` until its worker has
    recorded the end) with more than the fence time left."""
    young = attempts.filter(started_at__lt=_ago(0.5), started_at__gt=_ago(2.5)).values_list("pgid", flat=True)
    return len(set(young) & live_groups())


def live_groups() -> set[int]:
    """Process groups with a process that is not a zombie (a launcher that ended while its worker
    is stopped stays a zombie until the worker reaps it: it runs nothing)."""
    groups = set()
    for p in psutil.process_iter(["status"]):
        with contextlib.suppress(ProcessLookupError, psutil.Error):
            if p.info["status"] != psutil.STATUS_ZOMBIE:
                groups.add(os.getpgid(p.pid))
    return groups


@pytest.mark.timeout(420)  # a web server and its two readers on top of the 300 runs
def test_kill_9_of_one_of_three_clusters(fault_env, clusters, tmp_path):
    """A whole cluster (every process of its group) is killed -9 mid-batch: its agents are fenced by
    their launchers, its runs are retried once on the two others after the lease, none ran twice at once."""
    n = 300
    stamps = tmp_path / "stamps"
    stamps.touch()
    a, b, c = clusters(fault_env, "host-a", "host-b", "host-c")
    web = WebServer({**fault_env, "SPAWNER_WORKDIR": str(tmp_path)}, tmp_path / "daphne.log")
    web.wait_ready(timeout=60)
    started = time.monotonic()
    batch = launch(stamping_spec(n, stamps, retries=1, parallel=30, seconds=0.6, long_every=10), tmp_path)
    # Watching from the start, as a person and an API client would: the batch page over a websocket,
    # and the batch's event stream (every event id it gets).
    cookie = session_cookie()
    page = Watcher(web.url.replace("http://", "ws://") + f"/ws/batches/{batch.id}/", web.url, cookie)
    _thread, stop_page = watch_in_thread([page], timeout=280)
    events = EventReader(web.url, batch.id, cookie).start()
    on_c = RunAttempt.objects.filter(run__batch=batch, host="host-c", status=AttemptStatus.RUNNING)
    long_on_c = on_c.exclude(pgid=None).filter(run__key__in=[f"t{i}" for i in range(0, n, 10)])
    wait(
        lambda: terminal(batch) >= n // 4 and running_long(long_on_c) >= 1,
        120,
        "the batch to be under way, a long agent running on host-c",
    )

    c.kill_all()
    killed_at, killed_wall = time.monotonic(), time.time()
    victims = {x.id: x.pgid for x in on_c.exclude(pgid=None)}
    alive = set(victims.values()) & live_groups()
    gone_at: dict[int, float] = {}
    while alive and time.monotonic() - killed_at < 60:
        for pg in alive - live_groups():
            alive.discard(pg)
            gone_at[pg] = time.time()
        time.sleep(0.05)
    fenced_after = max(gone_at.values(), default=killed_wall) - killed_wall
    batch.refresh_from_db()
    wait(lambda: batch.refresh_from_db() or batch.status in (BatchStatus.SUCCEEDED, BatchStatus.FAILED), 150, "the end")
    wall = time.monotonic() - started
    try:
        wait(lambda: events.ended, 60, "the event stream's end")
        wait(lambda: settled([page], batch), 60, "the watching page to equal the database")
    finally:
        events.stop()
        stop_page()
        web.stop()
    logged = list(RunEvent.objects.filter(batch=batch).order_by("id").values_list("id", flat=True))

    attempts = list(RunAttempt.objects.filter(run__batch=batch).select_related("run").order_by("run_id", "number"))
    lost = [x for x in attempts if x.status == AttemptStatus.LOST]
    harvested = RunEvent.objects.filter(batch=batch, kind="attempt.harvested").count()
    retries = {x.run_id: x for x in attempts if x.number == 2}
    first_retry = min((x.started_at for x in retries.values()), default=None)
    recovered = max((x.started_at for x in retries.values()), default=None)
    twice, gap = overlaps(stretches(stamps))
    print(
        f"\nfaults: kill -9 of 1 of 3 clusters (20 workers each, lease {LEASE:g} s): {n} runs, "
        f"{len(victims)} attempts running on the killed host: {harvested} ended on their own (harvested), "
        f"{len(lost)} lost and retried, "
        f"agents fenced {fenced_after:.1f} s after the kill, lost attempts reaped "
        f"{max((x.finished_at.timestamp() - killed_wall for x in lost), default=0):.1f} s after it, "
        f"retries started {(first_retry.timestamp() - killed_wall) if first_retry else 0:.1f}-"
        f"{(recovered.timestamp() - killed_wall) if recovered else 0:.1f} s after it, "
        f"run twice at once: {twice} (smallest gap {gap:.1f} s), batch wall {wall:.1f} s, "
        f"events: {len(logged)} in the log, {len(events.ids)} seen by the watching client "
        f"({events.reconnects} reconnects), the page equal to the database"
    )

    assert batch.status == BatchStatus.SUCCEEDED
    assert set(batch.runs.values_list("status", flat=True)) == {RunStatus.SUCCEEDED}
    assert lost, "the kill met running agents"
    assert not alive, f"agent groups {alive} of the killed cluster still run"
    assert all(x.host == "host-c" for x in lost), [(x.host, x.error) for x in lost]
    for x in lost:
        retry = retries.get(x.run_id)
        assert retry is not None and retry.number == 2 and retry.host in ("host-a", "host-b"), x.run.key
        assert retry.status == AttemptStatus.SUCCEEDED
        assert retry.started_at.timestamp() >= gone_at.get(x.pgid, killed_wall), "retried once its agent was gone"
    assert max(x.number for x in attempts) <= 2, "each lost attempt was retried once"
    assert twice == 0
    assert sorted(x.run.key for x in attempts if x.status == AttemptStatus.SUCCEEDED) == sorted(
        f"t{i}" for i in range(n)
    )
    assert events_complete(batch) == []
    assert events.ids == logged, "the watching client got every event of the batch, once, in order"


def test_a_partition_longer_than_the_lease(fault_env, clusters, tmp_path):
    """One cluster's processes are stopped (SIGSTOP) past the lease, then go on (SIGCONT): its agents
    were fenced before the others retried them, and its late answers change nothing."""
    n = 60
    stamps = tmp_path / "stamps"
    stamps.touch()
    a, b = clusters(fault_env, "host-a", "host-b")
    started = time.monotonic()
    batch = launch(stamping_spec(n, stamps, retries=1, parallel=20, seconds=0.6, long_every=2), tmp_path)
    on_b = RunAttempt.objects.filter(run__batch=batch, host="host-b", status=AttemptStatus.RUNNING)
    long_on_b = on_b.exclude(pgid=None).filter(run__key__in=[f"t{i}" for i in range(0, n, 2)])
    wait(
        lambda: terminal(batch) >= n // 5 and running_long(long_on_b) >= 2,
        120,
        "the batch to be under way, long agents running on host-b",
    )

    b.signal_all(signal.SIGSTOP)
    stopped_at = time.time()
    cut_off = {x.id: x.pgid for x in on_b.exclude(pgid=None)}
    # The other cluster reaps them once the lease is over; by then the launchers have stopped them.
    # (Stopped workers queued for a batch's row lock each hold it until PostgreSQL ends their session.)
    try:
        wait(
            lambda: not RunAttempt.objects.filter(id__in=cut_off, status=AttemptStatus.RUNNING).exists(),
            LEASE * 5,
            "the partitioned cluster's attempts to be reaped",
        )
    except AssertionError:
        dump_sessions()
        raise
    reaped_after = time.time() - stopped_at
    still_running = set(cut_off.values()) & live_groups()
    time.sleep(2)  # the partition lasts a little longer
    before = {x.id: (x.status, x.finished_at, x.error, x.exit_code) for x in RunAttempt.objects.filter(id__in=cut_off)}
    b.signal_all(signal.SIGCONT)
    partition = time.time() - stopped_at
    wait(lambda: batch.refresh_from_db() or batch.status in (BatchStatus.SUCCEEDED, BatchStatus.FAILED), 150, "the end")
    wall = time.monotonic() - started
    time.sleep(2)  # the resumed workers have answered by now
    after = {x.id: (x.status, x.finished_at, x.error, x.exit_code) for x in RunAttempt.objects.filter(id__in=cut_off)}

    attempts = list(RunAttempt.objects.filter(run__batch=batch).select_related("run"))
    lost = [x for x in attempts if x.status == AttemptStatus.LOST]
    twice, gap = overlaps(stretches(stamps))
    changed = sum(before[k] != after[k] for k in before)
    print(
        f"\nfaults: partition (SIGSTOP) of 1 of 2 clusters for {partition:.0f} s "
        f"(lease {LEASE:g} s): {n} runs, {len(cut_off)} attempts cut off, reaped {reaped_after:.1f} s after the stop, "
        f"{len(lost)} lost and retried, late answers that changed something: {changed}, "
        f"run twice at once: {twice} (smallest gap {gap:.1f} s), batch wall {wall:.1f} s"
    )

    assert batch.status == BatchStatus.SUCCEEDED
    assert not still_running, f"orphaned agent groups {still_running} outlived the lease"
    assert before == after, "the partitioned cluster's late answers changed nothing"
    assert {v[0] for v in after.values()} <= {AttemptStatus.LOST, AttemptStatus.SUCCEEDED, AttemptStatus.FAILED}
    assert all(x.host == "host-b" for x in lost), [(x.host, x.error) for x in lost]
    assert all(AgentRun.objects.get(id=x.run_id).attempts.filter(number=2, host="host-a").exists() for x in lost), (
        "each lost attempt was retried on the other cluster"
    )
    assert twice == 0
    assert events_complete(batch) == []
    # The stopped cluster is back at work.
    wait(lambda: WorkerHeartbeat.objects.filter(host="host-b", seen_at__gte=_ago(2)).exists(), 20, "host-b to beat")


def _ago(seconds: float):
    from django.utils import timezone

    return timezone.now() - timedelta(seconds=seconds)


# --- a private PostgreSQL: restarted, and every connection dropped ---------------------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_postgres(transactional_db):
    """A PostgreSQL of this test's own (initdb in a tmp dir, own port) holding a copy of the test
    database; this process's connection points at it for the test."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 server binaries are not installed")
    root = Path(tempfile.mkdtemp(prefix="spawner-faults-pg-"))  # under /tmp: the server's user can reach it
    data, port = root / "data", free_port()
    as_pg = []
    if os.geteuid() == 0:  # the server refuses to run as root
        import pwd

        pg_user = pwd.getpwnam("postgres")
        os.chown(root, pg_user.pw_uid, pg_user.pw_gid)
        as_pg = ["runuser", "-u", "postgres", "--"]
    initdb = [*as_pg, PG_BIN / "initdb", "-D", data, "-U", "postgres", "-A", "trust"]
    subprocess.run(initdb, check=True, capture_output=True)
    opts = f"-c listen_addresses=127.0.0.1 -c port={port} -k {root} -c fsync=off -c max_connections=200"
    ctl = [*as_pg, PG_BIN / "pg_ctl", "-D", data, "-o", opts, "-l", root / "pg.log", "-w", "-t", "60"]
    subprocess.run([*ctl, "start"], check=True, capture_output=True)
    original = dict(connection.settings_dict)
    try:
        url = f"postgres://postgres@127.0.0.1:{port}/spawner"
        subprocess.run(["createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "spawner"], check=True)
        dump = subprocess.run(
            ["pg_dump", "-h", original["HOST"] or "127.0.0.1", "-p", str(original["PORT"] or 5432)]
            + ["-U", original["USER"], "--no-owner", original["NAME"]],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(
            ["psql", "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "spawner"],
            input=dump,
            check=True,
            capture_output=True,
        )
        connection.close()
        connection.settings_dict.update(HOST="127.0.0.1", PORT=port, NAME="spawner")
        yield {"url": url, "ctl": ctl, "port": port}
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(original)
        subprocess.run([*ctl, "stop", "-m", "immediate"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def terminate_all(port: int) -> int:
    """pg_terminate_backend of every other session on the private server."""
    out = subprocess.run(
        ["psql", "-Atq", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres", "-c"]
        + [
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip())


def web_ok(port: int, token: str, batch_id: int) -> bool:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/batches/{batch_id}", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status == 200 and json.load(response)["id"] == batch_id
    except OSError:
        return False


def test_a_postgresql_restart_and_dropped_connections_lose_nothing(private_postgres, fault_env, clusters, tmp_path):
    """Mid-batch, the database restarts (down ~3 s), later every connection is terminated: clusters
    and the web server recover by themselves, no attempt ends lost, nothing runs twice."""
    from django.contrib.auth.models import User

    n = 100
    stamps = tmp_path / "stamps"
    stamps.touch()
    env = {**fault_env, "SPAWNER_LEASE_SECONDS": "15"}
    clusters(env, "host-a", "host-b")
    admin = User.objects.create_superuser("ada", password="pw-ada-12345")
    token = services.token_create(user=admin, name="faults", scope="launch")[1]
    web_port = free_port()
    web_log = open(tmp_path / "web.log", "wb")  # noqa: SIM115
    web = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "serve", "--no-cluster", "--port", str(web_port)],
        env=env,
        cwd=ROOT,
        stdout=web_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        started = time.monotonic()
        batch = launch(stamping_spec(n, stamps, retries=0, parallel=40, seconds=0.6, long_every=10), tmp_path)
        wait(lambda: web_ok(web_port, token, batch.id), 60, "the web server to answer")
        wait(lambda: terminal(batch) >= n // 5, 120, "the batch to be under way")

        down = time.monotonic()
        subprocess.run([*private_postgres["ctl"], "stop", "-m", "fast"], check=True, capture_output=True)
        time.sleep(3)
        subprocess.run([*private_postgres["ctl"], "start"], check=True, capture_output=True)
        outage = time.monotonic() - down
        at_restart = wait(lambda: terminal(batch) + 1, 30, "the database to answer") - 1
        wait(lambda: terminal(batch) > at_restart + 20, 60, "runs to end again after the restart")
        recovered = time.monotonic() - down
        wait(lambda: web_ok(web_port, token, batch.id), 30, "the web server to answer after the restart")
        web_back = time.monotonic() - down

        terminated = terminate_all(private_postgres["port"])
        connection.close()
        wait(lambda: terminal(batch) >= n, 150, "every run to end")
        wait(lambda: web_ok(web_port, token, batch.id), 30, "the web server to answer after the terminations")
        wall = time.monotonic() - started
    finally:
        web.terminate()
        try:
            web.wait(timeout=30)
        except subprocess.TimeoutExpired:
            web.kill()
        web_log.close()

    batch.refresh_from_db()
    attempts = list(RunAttempt.objects.filter(run__batch=batch))
    lost = [x for x in attempts if x.status == AttemptStatus.LOST]
    twice, _ = overlaps(stretches(stamps))
    print(
        f"\nfaults: PostgreSQL restart (down {outage:.1f} s) + {terminated} connections terminated, 2 clusters "
        f"+ web: {n} runs, runs ending again {recovered:.1f} s and web answering {web_back:.1f} s after the stop, "
        f"{len(lost)} lost, {len(attempts) - n} attempts beyond one per run, run twice at once: {twice}, "
        f"batch wall {wall:.1f} s"
    )

    assert batch.status == BatchStatus.SUCCEEDED
    assert terminated > 0
    assert lost == []
    assert len(attempts) == n, "retries: 0, and every run ran once"
    assert twice == 0
    assert events_complete(batch) == []
