"""Several clusters: the registry (names, heartbeats, drain requests), and two real clusters on
PostgreSQL + Redis serving the same batches with per-type caps, staggers and budgets holding across
both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import timedelta

import psutil
import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from spawner import services
from spawner.engine import lifecycle, recovery, registry
from spawner.errors import ActionRefused, NotAllowed
from spawner.models import AgentRun, AgentType, Escalation, RunAttempt, WorkerHeartbeat
from tests.conftest import CLUSTER_ENV, ROOT, ClusterProcess, database_url_for_subprocess
from tests.spawner.helpers import launch, wait_batch, wait_for

HOST = lifecycle.HOST


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# --- the registry ------------------------------------------------------------------------


def test_a_second_live_cluster_with_the_same_name_is_refused(db):
    registry.join(name="east", host="machine-a", pid=100, workers=4)
    with pytest.raises(registry.NameTaken, match="a cluster named 'east' is already running .machine-a, pid 100"):
        registry.join(name="east", host="machine-b", pid=200, workers=4)
    registry.join(name="west", host="machine-b", pid=200, workers=4)  # another name is fine
    assert recovery.live_cluster_ids() == {"east", "west"}


def test_a_dead_clusters_name_is_taken_over(db):
    # Silent past the lease on another machine: forgotten.
    registry.join(name="east", host="machine-a", pid=100, workers=4)
    WorkerHeartbeat.objects.filter(name="east").update(seen_at=timezone.now() - timedelta(minutes=5))
    row = registry.join(name="east", host="machine-b", pid=200, workers=2)
    assert (row.host, row.pid, row.workers) == ("machine-b", 200, 2)
    # On this machine, a process that no longer exists holds no name, even within the lease.
    registry.join(name="here", host=HOST, pid=dead_pid(), workers=4)
    assert registry.join(name="here", host=HOST, pid=os.getpid(), workers=4).pid == os.getpid()
    assert WorkerHeartbeat.objects.filter(name="here").count() == 1


def test_the_beat_counts_busy_attempts_and_carries_the_drain_request(db, agent_types, tmp_path):
    assert registry.join(name="east", host=HOST, pid=os.getpid(), workers=3).state == "starting"
    batch = launch("name: b\nagent: sh\ntasks:\n  - {key: a, prompt: x}\n  - {key: b, prompt: y}\n", tmp_path)
    RunAttempt.objects.filter(run__batch=batch, run__key="a").update(status="running", cluster="east")
    RunAttempt.objects.filter(run__batch=batch, run__key="b").update(status="running", cluster="west")
    assert registry.beat(name="east", host=HOST, pid=os.getpid(), workers=3, draining=False) is False
    row = WorkerHeartbeat.objects.get(name="east")
    assert (row.busy, row.workers, row.state) == (1, 3, "running")
    assert row.version.startswith("0.") and row.version == registry.version()

    admin = User.objects.create_superuser("ada", password="pw-ada-12345")
    asked = services.cluster_drain(name="east", actor=admin)
    assert asked.drain_requested_by == "ada" and asked.drain_requested_at is not None
    assert registry.beat(name="east", host=HOST, pid=os.getpid(), workers=3, draining=True) is True
    assert WorkerHeartbeat.objects.get(name="east").state == "draining"


def test_a_beat_after_another_cluster_took_the_name_says_so(db):
    registry.join(name="east", host="machine-a", pid=100, workers=4)
    WorkerHeartbeat.objects.filter(name="east").update(seen_at=timezone.now() - timedelta(minutes=5))
    registry.join(name="east", host="machine-b", pid=200, workers=4)
    with pytest.raises(registry.NameLost, match="another cluster runs under the name 'east'"):
        registry.beat(name="east", host="machine-a", pid=100, workers=4, draining=False)


def test_only_an_admin_drains_and_only_a_live_cluster(db):
    registry.join(name="east", host="machine-a", pid=100, workers=4)
    member = User.objects.create_user("mia", password="pw-mia-12345")
    with pytest.raises(NotAllowed, match="only an admin may see the clusters"):
        services.cluster_drain(name="east", actor=member)
    with pytest.raises(ActionRefused, match=r"no live cluster is named 'west' \(live clusters: east\)"):
        services.cluster_drain(name="west", actor=None)
    with pytest.raises(ActionRefused, match="name the cluster"):
        services.cluster_drain(name="  ", actor=None)
    assert not WorkerHeartbeat.objects.filter(drain_requested_at__isnull=False).exists()
    assert services.cluster_drain(name="east", actor=None).drain_requested_by == "command line"


@pytest.mark.parametrize(
    ("name", "error"),
    [("has space", "has spaces or unprintable characters"), ("x" * 201, "201 characters; the limit is 200")],
)
def test_a_bad_cluster_name_is_named(monkeypatch, name, error):
    monkeypatch.setenv("SPAWNER_CLUSTER_NAME", name)
    with pytest.raises(ValueError, match=error):
        lifecycle.cluster_begin(os.getpid())


def test_the_name_defaults_to_host_and_pid(monkeypatch):
    monkeypatch.delenv("SPAWNER_CLUSTER_NAME", raising=False)
    assert lifecycle.cluster_begin(4242) == f"{HOST}:4242"
    monkeypatch.setenv("SPAWNER_CLUSTER_NAME", "east")
    assert lifecycle.cluster_begin(4242) == "east"


# --- two real clusters on PostgreSQL + Redis ------------------------------------------------

AT_SCALE = os.environ.get("DATABASE_URL", "").startswith("postgres") and bool(os.environ.get("REDIS_URL"))
at_scale = pytest.mark.skipif(
    not AT_SCALE,
    reason="several clusters share PostgreSQL and Redis: set DATABASE_URL=postgres://… and REDIS_URL "
    "(`make test-redis`); an unreachable server fails when CI=true (tests/conftest.py)",
)

# The agent notes its own start and end (wall clock), so overlaps are measured where the work ran.
STAMP = textwrap.dedent(
    """
    import json, os, sys, time
    start = time.time()
    time.sleep(float(os.environ["STAMP_SLEEP"]))
    end = time.time()
    with open(os.path.join(os.environ["STAMP_DIR"], sys.argv[1] + ".json"), "w") as f:
        json.dump([start, end], f)
    """
)


def stamp_type(tmp_path, name: str, sleep: float, **fields) -> AgentType:
    stamps = tmp_path / f"stamps-{name}"
    stamps.mkdir()
    script = tmp_path / "stamp.py"
    script.write_text(STAMP)
    return AgentType.objects.create(
        name=name,
        argv=[sys.executable, str(script), "{prompt}"],
        env={"STAMP_DIR": str(stamps), "STAMP_SLEEP": str(sleep)},
        **fields,
    )


def stamps_of(agent_type: AgentType) -> dict[str, tuple[float, float]]:
    folder = agent_type.env["STAMP_DIR"]
    return {f[:-5]: tuple(json.load(open(os.path.join(folder, f)))) for f in os.listdir(folder)}


def most_at_once(intervals) -> int:
    """The most intervals open at one moment (an end before a start at the same instant)."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


@pytest.fixture
def two_clusters(transactional_db, tmp_path, settings):
    """Two real `spawner_cluster` processes, east and west, on this test's PostgreSQL database and one
    Redis queue (this test run's own Redis db), sharing a log directory as clusters on one machine do."""
    from django_q.brokers import get_broker

    get_broker().delete_queue()  # nothing left over from an earlier run in this Redis db
    log_dir = tmp_path / "logs"
    settings.SPAWNER = {**settings.SPAWNER, "LOG_DIR": log_dir, "WORKSPACE_DIR": tmp_path / "workspaces"}
    clusters = []
    for name in ("east", "west"):
        env = {
            **os.environ,
            **CLUSTER_ENV,
            # Few workers: a cluster holds at most its workers plus as many prefetched messages (plus one in
            # its pusher's hand), so a batch of 8 cannot all land in the first cluster to ask.
            "SPAWNER_WORKERS": "2",
            "SPAWNER_CLUSTER_NAME": name,
            "DATABASE_URL": database_url_for_subprocess(),
            "SPAWNER_LOG_DIR": str(log_dir),
            "SPAWNER_WORKSPACE_DIR": str(tmp_path / "workspaces"),
        }
        c = ClusterProcess(env, tmp_path / f"cluster-{name}.log")
        clusters.append(c)
        c.start()
    yield clusters
    for c in clusters:
        c.stop()


def clusters_of(batch) -> set[str]:
    return set(RunAttempt.objects.filter(run__batch=batch).values_list("cluster", flat=True))


@at_scale
@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_concurrency_cap_holds_across_two_clusters(two_clusters, tmp_path):
    assert set(WorkerHeartbeat.objects.values_list("name", flat=True)) == {"east", "west"}
    capped = stamp_type(tmp_path, "capped", 0.8, max_concurrency=2)
    tasks = [{"key": f"c{i}", "prompt": f"c{i}"} for i in range(10)]
    spec_data = {"name": "capped", "agent": "capped", "max_parallel": 10, "tasks": tasks}
    batch = wait_batch(launch(json.dumps(spec_data), tmp_path), timeout=120)
    assert batch.status == "succeeded", list(AgentRun.objects.filter(batch=batch).values_list("key", "error"))

    stamps = stamps_of(capped)
    assert len(stamps) == 10
    assert most_at_once(stamps.values()) == 2, "the cap is 2 across both clusters, and both slots were used"
    attempts = RunAttempt.objects.filter(run__batch=batch)
    assert most_at_once([(a.started_at, a.finished_at) for a in attempts]) == 2
    assert clusters_of(batch) == {"east", "west"}, "both clusters took work"


@at_scale
@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_spawn_stagger_holds_across_two_clusters(two_clusters, tmp_path):
    stagger = 0.5
    staggered = stamp_type(tmp_path, "staggered", 1.5, spawn_stagger_seconds=stagger)
    tasks = [{"key": f"s{i}", "prompt": f"s{i}"} for i in range(8)]
    spec_data = {"name": "staggered", "agent": "staggered", "max_parallel": 8, "tasks": tasks}
    batch = wait_batch(launch(json.dumps(spec_data), tmp_path), timeout=120)
    assert batch.status == "succeeded"

    starts = sorted(RunAttempt.objects.filter(run__batch=batch).values_list("started_at", flat=True))
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]
    assert len(starts) == 8 and min(gaps) >= stagger, gaps
    assert most_at_once(stamps_of(staggered).values()) >= 2, "staggered starts, yet the agents ran side by side"
    assert clusters_of(batch) == {"east", "west"}


@at_scale
@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_budget_stops_new_starts_across_two_clusters(two_clusters, tmp_path):
    AgentType.objects.create(name="costing", argv=["sh", "-c", "{prompt}"])
    cost = 'sleep 1; echo \'{"summary": "done", "cost": 0.3}\' > $SPAWNER_RESULT_FILE'
    tasks = [{"key": f"b{i}", "prompt": cost, "estimate_usd": 0.3} for i in range(8)]
    spec_data = {"name": "budgeted", "agent": "costing", "max_parallel": 8, "budget_usd": 1.0, "tasks": tasks}
    batch = wait_batch(launch(json.dumps(spec_data), tmp_path), timeout=120)

    runs = list(AgentRun.objects.filter(batch=batch))
    started = [r for r in runs if r.attempts.exclude(started_at=None).exists()]
    assert len(started) == 3, "three $0.30 runs fit in $1.00, a fourth does not"
    assert all(r.status == "succeeded" for r in started)
    skipped = [r for r in runs if r not in started]
    assert len(skipped) == 5 and all(r.status == "skipped" and r.error.startswith("budget") for r in skipped)
    assert sum(r.cost_usd for r in started) == pytest.approx(0.9)
    assert Escalation.objects.get(batch=batch).kind == Escalation.Kind.BUDGET


@at_scale
@pytest.mark.integration
@pytest.mark.timeout(120)
def test_requests_per_minute_hold_across_two_clusters(two_clusters, tmp_path):
    """rpm 4, six runs, two clusters with free workers: four start now, the other two wait out the
    minute as "rate limited" (not failed), whichever cluster would take them."""
    limited = stamp_type(tmp_path, "limited", 0.2, requests_per_minute=4)
    tasks = [{"key": f"r{i}", "prompt": f"r{i}"} for i in range(6)]
    spec_data = {"name": "rpm", "agent": "limited", "max_parallel": 6, "tasks": tasks}
    batch = launch(json.dumps(spec_data), tmp_path)
    wait_for(lambda: len(stamps_of(limited)) >= 4, 30, "four starts")
    time.sleep(3)  # both clusters' pushers and reapers have looked several times since
    started = RunAttempt.objects.filter(run__batch=batch, started_at__isnull=False)
    assert started.count() == 4 and len(stamps_of(limited)) == 4
    waiting = AgentRun.objects.filter(batch=batch).exclude(id__in=started.values("run_id"))
    assert waiting.count() == 2 and not waiting.exclude(status__in=("pending", "queued")).exists()
    first = min(started.values_list("started_at", flat=True))
    for attempt in RunAttempt.objects.filter(run__in=waiting):
        assert (attempt.not_before - first).total_seconds() >= 59, "held to the next minute"
    services.batch_cancel(batch=batch, actor=None)
    wait_batch(batch, timeout=30)


@at_scale
@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_second_cluster_with_a_live_name_does_not_start(two_clusters, tmp_path):
    env = {**two_clusters[0].env}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "spawner_cluster"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )
    assert proc.returncode != 0
    assert "spawner cluster not started: a cluster named 'east' is already running" in proc.stderr
    assert "Traceback" not in proc.stderr
    row = WorkerHeartbeat.objects.get(name="east")
    assert row.pid == two_clusters[0].proc.pid and psutil.pid_exists(row.pid)
    wait_for(lambda: WorkerHeartbeat.objects.get(name="east").seen_at > row.seen_at, 10, "east to beat on")
