"""Shared plumbing for the benchmark scripts: a throwaway database, a real cluster, batches.

Import order matters: call `setup()` before anything touches Django, because the
settings read DATABASE_URL, SPAWNER_VAR_DIR, SPAWNER_LOG_DIR, REDIS_URL and
SPAWNER_WORKERS from the environment when they are first imported.

    from bench import _common as bc      # or `import _common as bc` from bench/
    env = bc.setup(database_url=None, redis_url=None, workers=20)
    with bc.Cluster(env) as cluster:
        bc.agent_type("sleep", ["sleep", "{prompt}"])
        batch, t0 = bc.launch({...spec...})
        batch = bc.wait(batch)

Nothing here asserts a timing: the scripts print figures and ratios.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Variables that would point the bench at a real installation; never inherited.
_SCRUBBED = ("DATABASE_URL", "REDIS_URL", "SPAWNER_VAR_DIR", "SPAWNER_LOG_DIR", "DJANGO_SETTINGS_MODULE")

STATE: dict = {}


# --- environment ----------------------------------------------------------------------


def _throwaway_postgres(url: str) -> tuple[str, str]:
    """Create a fresh database next to the one named in `url`; return (its URL, its name)."""
    import psycopg

    parts = urlsplit(url)
    name = f"spawner_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = psycopg.connect(url.replace("postgres://", "postgresql://", 1), autocommit=True, connect_timeout=5)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}")), name


def _drop_postgres(url: str, name: str) -> None:
    import psycopg

    try:
        with psycopg.connect(url.replace("postgres://", "postgresql://", 1), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.Error as exc:  # pragma: no cover - best effort cleanup
        print(f"(could not drop throwaway database {name}: {exc})", file=sys.stderr)


def setup(
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    workers: int = 20,
    extra_env: dict[str, str] | None = None,
    q_cluster: dict | None = None,
    conn_max_age: int | None = None,
    gc_freeze: bool = False,
) -> dict[str, str]:
    """Point Django at a throwaway database in a temp dir, migrate it, return the cluster's env.

    database_url: None = SQLite in the temp dir (the embedded default); a postgres URL =
    a fresh database created on that server for this run and dropped at exit.
    redis_url: None = the ORM broker (the embedded default); else the Redis broker.
    q_cluster, conn_max_age: experiments only. Overrides merged into Q_CLUSTER (e.g. {"bulk": 4})
    and DATABASES["default"]["CONN_MAX_AGE"], through a settings module written in the temp dir
    that imports spawner.settings; None = the project's settings untouched.
    gc_freeze: experiment only. An extra app in the temp dir whose ready() imports the task
    modules and calls gc.freeze() in the cluster's main process, before q2 forks its workers.
    """
    tmp = Path(tempfile.mkdtemp(prefix="spawner-bench-"))
    STATE["tmp"] = tmp
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    if database_url and database_url.startswith(("postgres://", "postgresql://")):
        db_url, db_name = _throwaway_postgres(database_url)
        STATE["pg_drop"] = (database_url, db_name)
    elif database_url:
        db_url = database_url
    else:
        db_url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    env.update(
        DATABASE_URL=db_url,
        SPAWNER_VAR_DIR=str(tmp),
        SPAWNER_LOG_DIR=str(tmp / "logs"),
        SPAWNER_WORKERS=str(workers),
        DJANGO_SETTINGS_MODULE="spawner.settings",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    if q_cluster or conn_max_age is not None or gc_freeze:
        code = ["from spawner.settings import *  # noqa: F403"]
        if gc_freeze:
            (tmp / "bench_gc_freeze.py").write_text(_GC_FREEZE_APP)
            code.append('INSTALLED_APPS = [*INSTALLED_APPS, "bench_gc_freeze.Freeze"]  # noqa: F405')
        if q_cluster:
            code.append(f"Q_CLUSTER = {{**Q_CLUSTER, **{q_cluster!r}}}  # noqa: F405")
        if conn_max_age is not None:
            code.append(f'DATABASES["default"]["CONN_MAX_AGE"] = {conn_max_age!r}  # noqa: F405')
        (tmp / "bench_settings.py").write_text("\n".join(code) + "\n")
        env["DJANGO_SETTINGS_MODULE"] = "bench_settings"
        env["PYTHONPATH"] = os.pathsep.join([str(tmp), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        sys.path.insert(0, str(tmp))
    env.update(extra_env or {})
    for key in _SCRUBBED:
        os.environ.pop(key, None)
    os.environ.update(env)
    STATE["env"] = env
    STATE["db_url"] = db_url
    STATE["redis_url"] = redis_url

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    if redis_url:
        from django_q.brokers import get_broker

        get_broker().purge_queue()  # a leftover list in this Redis db would be delivered to us
    return env


_GC_FREEZE_APP = """\
import gc

from django.apps import AppConfig


class Freeze(AppConfig):
    name = "bench_gc_freeze"

    def ready(self):
        import django_q.cluster  # noqa: F401
        import django_q.worker  # noqa: F401

        import spawner.engine.execution  # noqa: F401
        import spawner.engine.tasks  # noqa: F401
        import spawner.runners.command  # noqa: F401

        gc.collect()
        gc.freeze()  # forked workers then share these objects instead of copying them on GC passes
"""


def cleanup() -> None:
    from django.db import connections

    connections.close_all()
    if "pg_drop" in STATE:
        _drop_postgres(*STATE.pop("pg_drop"))
    tmp = STATE.get("tmp")
    if tmp and os.environ.get("SPAWNER_BENCH_KEEP") != "1":
        shutil.rmtree(tmp, ignore_errors=True)


def describe_backend() -> str:
    from django.db import connection

    vendor = connection.vendor
    if vendor == "sqlite":
        import sqlite3

        db = f"SQLite {sqlite3.sqlite_version} (WAL)"
    elif vendor == "postgresql":
        with connection.cursor() as c:
            c.execute("SHOW server_version")
            db = f"PostgreSQL {c.fetchone()[0].split()[0]}"
    else:
        db = vendor
    broker = "Redis broker" if STATE.get("redis_url") else "ORM broker"
    return f"{db} + {broker}"


def machine() -> str:
    import psutil

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    busy = psutil.cpu_percent(interval=0.5)
    return (
        f"{platform.system()} {platform.machine()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, Python {platform.python_version()}; "
        f"before the bench: CPU {busy:.0f}% busy, load average {load}"
    )


# --- cluster ----------------------------------------------------------------------------


class Cluster:
    """A real `manage.py spawner_cluster` subprocess on the bench database."""

    def __init__(self, env: dict[str, str], name: str = "cluster"):
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.log_path = STATE["tmp"] / f"{name}.log"

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> float:
        from spawner.models import WorkerHeartbeat

        self.log = open(self.log_path, "ab")  # noqa: SIM115
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "spawner_cluster"],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        while not WorkerHeartbeat.objects.filter(pid=self.proc.pid).exclude(state="starting").exists():
            if self.proc.poll() is not None or time.monotonic() - t0 > timeout:
                raise RuntimeError(f"cluster did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        self.ready_seconds = time.monotonic() - t0
        return self.ready_seconds

    @property
    def pid(self) -> int:
        return self.proc.pid

    def processes(self) -> tuple[list, list]:
        """(cluster processes incl. the main one, agent processes): agents run in their own sessions."""
        import psutil

        main = psutil.Process(self.proc.pid)
        sid = os.getsid(self.proc.pid)
        cluster, agents = [main], []
        for p in main.children(recursive=True):
            with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
                (agents if os.getsid(p.pid) != sid else cluster).append(p)
        return cluster, agents

    def stop(self, timeout: float = 30) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()


def memory(procs) -> dict[str, float]:
    """Summed rss/pss/uss in MiB over processes (pss/uss need Linux and the same user)."""
    import psutil

    total = {"rss": 0.0, "pss": 0.0, "uss": 0.0, "n": 0}
    full = True
    for p in procs:
        try:
            try:
                m = p.memory_full_info()
            except psutil.AccessDenied:
                m, full = p.memory_info(), False
            total["rss"] += m.rss
            total["pss"] += getattr(m, "pss", 0)
            total["uss"] += getattr(m, "uss", 0)
            total["n"] += 1
        except psutil.NoSuchProcess:
            pass
    out = {k: (v / 2**20 if k != "n" else v) for k, v in total.items()}
    if not full or not out["pss"]:
        out["pss"] = out["uss"] = float("nan")
    return out


def cpu_seconds(procs) -> dict[str, float]:
    """CPU seconds used so far: by the processes themselves, and by their waited-for children."""
    import psutil

    own = children = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        own += t.user + t.system
        children += t.children_user + t.children_system
    return {"own": own, "children": children}


def cpu_of(cluster: Cluster) -> dict[str, float]:
    """CPU seconds so far: the cluster's processes, the agents they reaped, this process, the machine."""
    import psutil

    procs, _ = cluster.processes()
    c = cpu_seconds(procs)
    t = os.times()
    m = psutil.cpu_times()
    busy = sum(m) - m.idle - getattr(m, "iowait", 0.0)
    return {"cluster": c["own"], "agents": c["children"], "bench": t.user + t.system, "machine": busy}


class Clusters:
    """Several clusters on the same database and broker, measured as one (the at-scale shape)."""

    def __init__(self, env: dict[str, str], count: int):
        self.members = [Cluster(env, f"cluster{i + 1}") for i in range(count)]

    def start(self, timeout: float = 60) -> float:
        return max(c.start(timeout) for c in self.members)

    @property
    def pid(self) -> str:
        return ", ".join(str(c.pid) for c in self.members)

    def processes(self) -> tuple[list, list]:
        cluster, agents = [], []
        for c in self.members:
            a, b = c.processes()
            cluster += a
            agents += b
        return cluster, agents

    def stop(self, timeout: float = 30) -> None:
        for c in self.members:
            c.stop(timeout)


class Busy:
    """A CPU-bound load beside the benchmark: `n` processes spinning in a loop until stopped."""

    def __init__(self, n: int):
        self.procs = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"], stdout=subprocess.DEVNULL) for _ in range(n)
        ]

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def pg_writes() -> dict[str, int] | None:
    """PostgreSQL's counters for this database (transactions, rows written), or None on SQLite.
    The server publishes a backend's counts within a second or so of its transactions."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as c:
        c.execute(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
        commits, ins, upd, dele = c.fetchone()
    return {"commits": commits, "inserted": ins, "updated": upd, "deleted": dele}


# --- batches ----------------------------------------------------------------------------


def agent_type(name: str, argv: list[str], **fields):
    from spawner.models import AgentType

    obj, _ = AgentType.objects.update_or_create(name=name, defaults={"argv": argv, "description": "bench", **fields})
    return obj


def load(spec_data: dict):
    from spawner import services

    text = json.dumps(spec_data)
    return services.spec_load(text, is_admin=True), text


def launch(spec_data: dict, *, mode: str | None = None):
    """Launch a batch through spawner.services. Returns (batch, t0 = wall clock just before the call)."""
    from spawner import services

    batch_spec, text = load(spec_data)
    t0 = time.time()
    batch = services.batch_launch(
        batch_spec=batch_spec, base_dir=STATE["tmp"], spec_data=spec_data, spec_text=text, mode=mode
    )
    return batch, t0


def wait(batch, *, poll: float = 0.02, timeout: float = 600):
    """Poll Batch.status until it ends; returns the batch with `.ended_at` (time.time()) set."""
    from spawner.models import Batch
    from spawner.states import BATCH_TERMINAL

    deadline = time.monotonic() + timeout
    while True:
        status = Batch.objects.values_list("status", flat=True).get(id=batch.id)
        if status in BATCH_TERMINAL:
            ended = time.time()
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch #{batch.id} still {status} after {timeout} s")
        time.sleep(poll)
    batch.refresh_from_db()
    batch.ended_at = ended
    return batch


def run_batch(spec_data: dict, *, mode: str | None = None, poll: float = 0.02):
    """Launch and wait. Returns (batch, wall seconds measured from before batch_launch)."""
    batch, t0 = launch(spec_data, mode=mode)
    batch = wait(batch, poll=poll)
    return batch, batch.ended_at - t0


def xargs(arg_lines: list[str], command: list[str], parallel: int) -> float:
    """Wall seconds of `printf ... | xargs -P N -n1 COMMAND`: the baseline."""
    data = "".join(f"{a}\n" for a in arg_lines).encode()
    t0 = time.perf_counter()
    subprocess.run(["xargs", f"-P{parallel}", "-n1", *command], input=data, check=True)
    return time.perf_counter() - t0


# --- numbers ----------------------------------------------------------------------------


def pct(values, q: float) -> float:
    """Percentile by linear interpolation (q in 0..100)."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def mean(values) -> float:
    return statistics.fmean(values) if values else float("nan")


def table(rows: list[tuple], headers: tuple) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=False)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(tuple("-" * w for w in widths)), *map(line, rows)])
