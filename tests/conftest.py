"""Shared fixtures: a real qcluster process on the test database, and agent types for tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

ROOT = Path(__file__).resolve().parent.parent

# Fuzz tests: many examples in CI, a quick pass locally.
_FUZZ = {
    # Generous: it catches a pathological input (minutes), not a loaded machine; speed is measured in bench/.
    "deadline": 10_000,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
}
hypothesis_settings.register_profile("ci", max_examples=2000, **_FUZZ)
hypothesis_settings.register_profile("dev", max_examples=200, **_FUZZ)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


def _unreachable(what: str, url: str, exc: Exception) -> None:
    if os.environ.get("CI") == "true":
        pytest.exit(f"{what} at {url} is unreachable (CI=true, so this fails): {exc}", returncode=1)
    pytest.exit(f"{what} at {url} is unreachable; skipping this run: {exc}", returncode=0)


def pytest_sessionstart(session):
    """An unreachable PostgreSQL or Redis fails in CI and skips everywhere else."""
    if redis_url := os.environ.get("REDIS_URL"):
        import redis

        try:
            redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
        except redis.RedisError as exc:
            _unreachable("Redis", redis_url, exc)
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        return
    import psycopg

    db = settings.DATABASES["default"]
    try:
        psycopg.connect(
            host=db["HOST"],
            port=db["PORT"] or 5432,
            user=db["USER"],
            dbname=db["NAME"],
            password=db.get("PASSWORD") or None,
            connect_timeout=3,
        ).close()
    except psycopg.OperationalError as exc:
        _unreachable("PostgreSQL", url, exc)


def database_url_for_subprocess() -> str:
    """The URL of the database this test run actually uses (the test database)."""
    from django.db import connection

    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


CLUSTER_ENV = {
    "SPAWNER_LEASE_SECONDS": "3",
    "SPAWNER_HEARTBEAT_SECONDS": "0.5",
    "SPAWNER_REAPER_SECONDS": "0.5",
    "SPAWNER_POLL_SECONDS": "0.1",
    "SPAWNER_OUTPUT_SECONDS": "0.3",
    "SPAWNER_KILL_GRACE_SECONDS": "1",
    "SPAWNER_BACKOFF_SECONDS": "0.2",
    "SPAWNER_WORKERS": "12",
    # Tests' webhook receivers listen on loopback, which only an admin's allow-list permits.
    "SPAWNER_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    "SPAWNER_WEBHOOK_TIMEOUT_SECONDS": "1",
    "SPAWNER_WEBHOOK_BACKOFF_SECONDS": "0.2",
    "SPAWNER_WEBHOOK_POLL_SECONDS": "0.1",
    # Stopping the fixture's cluster drains briefly, then hands back what is left.
    "SPAWNER_DRAIN_SECONDS": "5",
}


class ClusterProcess:
    def __init__(self, env: dict[str, str], log_path: Path):
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        from spawner.models import WorkerHeartbeat

        self.log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "spawner_cluster"],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        deadline = time.monotonic() + 60
        # Its registry row is written at start ("starting"); the first beat after q2 is up makes it ready.
        while not WorkerHeartbeat.objects.filter(pid=self.proc.pid).exclude(state="starting").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cluster did not start; see {self.log_path}:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)

    def worker_pids(self) -> list[int]:
        import psutil

        return [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture
def cluster(transactional_db, tmp_path, settings):
    """A real `manage.py spawner_cluster` (qcluster + reaper) on this test's database."""
    log_dir = tmp_path / "logs"
    workspace_dir = tmp_path / "workspaces"
    settings.SPAWNER = {**settings.SPAWNER, "LOG_DIR": log_dir, "WORKSPACE_DIR": workspace_dir}
    env = {
        **os.environ,
        **CLUSTER_ENV,
        "DATABASE_URL": database_url_for_subprocess(),
        "SPAWNER_LOG_DIR": str(log_dir),
        "SPAWNER_WORKSPACE_DIR": str(workspace_dir),
    }
    c = ClusterProcess(env, tmp_path / "cluster.log")
    c.start()
    yield c
    c.stop()


@pytest.fixture
def agent_types(db):
    """The preset agent types plus plain ones for tests: `sh` (admin-free) and `sleep`."""
    from spawner.models import AgentType

    AgentType.objects.get_or_create(name="sh", defaults={"argv": ["sh", "-c", "{prompt}"], "description": "test shell"})
    AgentType.objects.get_or_create(name="sleep", defaults={"argv": ["sleep", "{prompt}"]})
    return {t.name: t for t in AgentType.objects.all()}


@pytest.fixture(scope="session", autouse=True)
def _no_sessions_left_on_the_test_database(django_db_setup, django_db_blocker):
    """Subprocesses (clusters, servers) may leave PostgreSQL sessions for a moment after
    they die; dropping the test database needs none, so wait for them (then end them)."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    others = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        deadline = time.monotonic() + 10
        while True:
            cursor.execute(others)
            pids = [row[0] for row in cursor.fetchall()]
            if not pids or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for pid in pids:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
