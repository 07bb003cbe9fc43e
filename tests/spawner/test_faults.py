"""Fault injection against real clusters: hard kills, graceful restarts, a worker's death.

Each test names the figure it measures in its output (run with -s to see them).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from spawner.models import Escalation, RunAttempt, RunEvent
from spawner.states import AttemptStatus, BatchStatus, RunStatus
from tests.conftest import ROOT, ClusterProcess
from tests.spawner.helpers import launch, pid_alive, wait_batch, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def fan_out(n: int, prompt: str, *, retries: int = 0) -> str:
    tasks = "\n".join(f"  - {{key: t{i}, prompt: {prompt.replace('KEY', f't{i}')!r}}}" for i in range(n))
    return f"name: faults\nagent: sh\nmax_parallel: {n}\nretries: {retries}\nbackoff: 0.1\ntasks:\n{tasks}\n"


@pytest.fixture
def another_cluster(cluster, tmp_path):
    """Start more clusters on the same database (stopped after the test), with extra settings."""
    started = []

    def start(name: str, **env: str) -> ClusterProcess:
        c = ClusterProcess({**cluster.env, **env}, tmp_path / f"{name}.log")
        started.append(c)
        c.start()
        return c

    yield start
    for c in started:
        c.stop()


def kill_hard(cluster: ClusterProcess, *, with_agents: bool) -> None:
    """kill -9 the cluster's processes at once, as a crash would (with its agents: the host's crash)."""
    main = psutil.Process(cluster.proc.pid)
    procs = [main, *main.children(recursive=True)]
    if not with_agents:  # agents run in sessions of their own
        procs = [p for p in procs if os.getsid(p.pid) == os.getsid(main.pid)]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    cluster.proc.wait(timeout=10)


def lines(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_a_hard_killed_cluster_strands_no_run(cluster, another_cluster, agent_types, tmp_path):
    """More runs than workers: the dead cluster held prefetched messages (locked by the ORM broker for
    hours, popped for good from Redis). A new cluster recovers every run within the lease."""
    marks = tmp_path / "marks"
    marks.mkdir()
    workers = int(cluster.env["SPAWNER_WORKERS"])
    batch = launch(fan_out(workers + 8, f"echo x >> {marks}/KEY; sleep 2", retries=1), tmp_path)
    running = RunAttempt.objects.filter(run__batch=batch, status=AttemptStatus.RUNNING, pgid__isnull=False)
    wait_for(lambda: running.count() == workers, 30, "every worker to run an agent")
    wait_for(
        lambda: RunAttempt.objects.filter(run__batch=batch, status=AttemptStatus.QUEUED).exclude(held_by="").exists(),
        10,
        "the cluster to prefetch queued attempts",
    )
    started_first = {a.run.key for a in running.select_related("run")}
    # Running (a process group recorded) is not yet having run its first command: wait for each mark.
    wait_for(lambda: all((marks / key).exists() for key in started_first), 30, "every running agent's mark")

    kill_hard(cluster, with_agents=True)
    killed_at = time.monotonic()
    cluster.proc = None  # nothing left for the fixture to stop
    another_cluster("second")
    batch = wait_batch(batch, timeout=60)
    recovered = time.monotonic() - killed_at
    print(f"\nkill -9 of the cluster to every run ended: {recovered:.1f} s (lease 3 s, agents 2 s)")

    assert batch.status == BatchStatus.SUCCEEDED
    assert recovered < 3 + 2 + 15, "within the lease plus a run plus a generous margin"
    lost_attempts = RunAttempt.objects.filter(run__batch=batch, status=AttemptStatus.LOST)
    lost = set(lost_attempts.values_list("run__key", flat=True))
    assert lost and lost <= started_first, "the kill met running agents, and only those were lost"
    for run in batch.runs.all():
        # An agent that had ended just before the kill (its worker not done recording it) is harvested.
        ran = len(lines(marks / run.key))
        assert ran == (2 if run.key in lost else 1), f"{run.key} ran {ran} times"
    assert not Escalation.objects.filter(batch=batch).exists()


def test_a_healthy_backlog_is_never_sent_twice(cluster, agent_types, tmp_path):
    """Queued attempts wait longer than the lease behind busy workers: none is sent again."""
    marks = tmp_path / "marks"
    marks.mkdir()
    workers = int(cluster.env["SPAWNER_WORKERS"])
    batch = wait_batch(launch(fan_out(workers * 2 + 4, f"echo x >> {marks}/KEY; sleep 2"), tmp_path), timeout=90)

    assert batch.status == BatchStatus.SUCCEEDED
    assert not RunAttempt.objects.filter(run__batch=batch, sent_at__isnull=False).exists()
    assert all(len(lines(marks / r.key)) == 1 for r in batch.runs.all())


def test_a_sigterm_drains_without_spending_a_retry(cluster, agent_types, tmp_path):
    """retries: 0, SIGTERM mid-run: the running agents finish, the batch succeeds, nobody is paged."""
    batch = launch(fan_out(3, "sleep 2"), tmp_path)
    running = RunAttempt.objects.filter(run__batch=batch, status=AttemptStatus.RUNNING, pgid__isnull=False)
    wait_for(lambda: running.count() == 3, 30, "three agents to start")

    cluster.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    cluster.proc.wait(timeout=30)
    stopped = time.monotonic() - signalled
    print(f"\nSIGTERM to a clean stop, agents with up to 2 s left: {stopped:.1f} s")

    batch = wait_batch(batch, timeout=5)
    assert cluster.proc.returncode == 0
    assert batch.status == BatchStatus.SUCCEEDED
    assert set(RunAttempt.objects.filter(run__batch=batch).values_list("status", flat=True)) == {"succeeded"}
    assert not Escalation.objects.filter(batch=batch).exists()


def test_a_short_drain_hands_back_the_rest_and_the_next_cluster_runs_them(
    cluster, another_cluster, agent_types, tmp_path
):
    cluster.stop()
    first = another_cluster("first", SPAWNER_DRAIN_SECONDS="1")
    marks = tmp_path / "marks"
    marks.mkdir()
    # The first attempt outlives the drain; the fresh one finds its mark and ends at once.
    script = f"echo $$ >> {marks}/KEY; test $(wc -l < {marks}/KEY) -ge 2 || sleep 60"
    batch = launch(fan_out(3, script), tmp_path)
    running = RunAttempt.objects.filter(run__batch=batch, status=AttemptStatus.RUNNING, pgid__isnull=False)
    wait_for(lambda: running.count() == 3, 30, "three agents to start")

    first.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    first.proc.wait(timeout=30)
    stopped = time.monotonic() - signalled
    print(f"\nSIGTERM to a stop with 3 agents handed back (drain 1 s, kill grace 1 s): {stopped:.1f} s")

    assert first.proc.returncode == 0
    assert stopped < 1 + 1 + 10
    firsts = RunAttempt.objects.filter(run__batch=batch, number=1)
    assert set(firsts.values_list("status", flat=True)) == {AttemptStatus.HANDED_BACK}
    assert set(batch.runs.values_list("status", flat=True)) == {RunStatus.QUEUED}, "each has a fresh attempt"
    for run in batch.runs.all():
        wait_for(lambda run=run: not pid_alive(int(lines(marks / run.key)[0])), 10, "the handed-back agent to stop")

    another_cluster("second")
    batch = wait_batch(batch, timeout=30)

    assert batch.status == BatchStatus.SUCCEEDED
    for run in batch.runs.all():
        statuses = list(run.attempts.order_by("number").values_list("status", flat=True))
        assert statuses == ["handed_back", "succeeded"], "retries: 0, and the hand-back spent none"
    assert not Escalation.objects.filter(batch=batch).exists()
    assert RunEvent.objects.filter(batch=batch, kind="run.handed_back").count() == 3


def test_an_agent_that_finishes_while_its_worker_is_dead_is_not_run_again(cluster, agent_types, tmp_path):
    marker = tmp_path / "ran"
    batch = launch(fan_out(1, f"echo x >> {marker}; sleep 0.8", retries=1), tmp_path)
    attempt = wait_for(lambda: RunAttempt.objects.filter(run__batch=batch, pgid__isnull=False).first(), 30)

    os.kill(attempt.worker_pid, signal.SIGKILL)
    batch = wait_batch(batch, timeout=30)

    run = batch.runs.get()
    assert (batch.status, run.status, run.exit_code) == (BatchStatus.SUCCEEDED, RunStatus.SUCCEEDED, 0)
    assert run.attempts.count() == 1
    assert len(lines(marker)) == 1, "the agent ran exactly once"
    assert RunEvent.objects.filter(run=run, kind="attempt.harvested").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_stops_daphne_promptly_when_started_with_sigint_ignored(cluster, tmp_path):
    """As when started from a script (`serve &`): SIGINT is ignored in daphne for good."""
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    serve = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "serve", "--no-cluster", "--port", str(port)],
        env=cluster.env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, 60, "daphne to listen")
        daphne = psutil.Process(serve.pid).children()

        serve.send_signal(signal.SIGINT)
        signalled = time.monotonic()
        serve.wait(timeout=40)
        stopped = time.monotonic() - signalled
        print(f"\nserve (SIGINT ignored at start) to stopped: {stopped:.1f} s")

        assert stopped < 10
        assert all(not pid_alive(p.pid) for p in daphne)
    finally:
        if serve.poll() is None:
            serve.kill()
        log.close()


def test_a_starting_cluster_stops_its_machines_orphans_and_nothing_else(agent_types, tmp_path, settings):
    """An attempt of this machine whose worker is gone: its agent's group is killed. Another's (pid
    reused since) and another machine's are left alone."""
    from spawner.engine import execution, recovery
    from spawner.runners import CommandRunner, Invocation
    from tests.spawner.helpers import claimed, queued_batch

    settings.SPAWNER = {**settings.SPAWNER, "LOG_DIR": tmp_path / "logs"}
    batch = queued_batch(tmp_path)
    orphan, elsewhere = claimed(batch, "a"), claimed(batch, "b")
    dead_worker = subprocess.Popen(["true"])
    dead_worker.wait()
    agents = []
    for attempt in (orphan, elsewhere):
        log = execution.attempt_paths(attempt)[0]
        paths = (log, log.with_suffix(".json"), log.with_suffix(".txt"))
        agents.append(CommandRunner().start(Invocation(("sleep", "30"), "", "arg", "k", tmp_path, *paths)))
    unrelated = subprocess.Popen(["sleep", "30"], start_new_session=True)
    RunAttempt.objects.filter(id=elsewhere.id).update(worker_pid=dead_worker.pid, pgid=agents[1].pgid, host="other")
    try:
        # Its group id now names a process that is not the attempt's agent (reused): left alone.
        RunAttempt.objects.filter(id=orphan.id).update(worker_pid=dead_worker.pid, pgid=unrelated.pid)
        assert recovery.kill_orphans() == 0
        RunAttempt.objects.filter(id=orphan.id).update(pgid=agents[0].pgid)
        assert recovery.kill_orphans() == 1
        wait_for(lambda: agents[0].poll() is not None, 10, "the orphan to be stopped")
        assert unrelated.poll() is None, "an unrelated process group"
        assert agents[1].poll() is None, "another machine's agent"
    finally:
        unrelated.kill()
        for agent in agents:
            agent.stop(0.5)
