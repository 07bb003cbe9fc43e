"""What one agent costs the database and the event log, for docs/scaling.md.

Runs a real `spawner_cluster` on a throwaway database (PostgreSQL for the at-scale shape) and counts,
per agent:

- SQL statements, by kind, in every process that touches the database: the cluster's (main process,
  q2 sentinel, pusher, monitor, workers: counted by a wrapper installed through a bench-only app)
  and this one (the launch);
- on PostgreSQL, what the server itself counted for the database (pg_stat_database): transactions
  committed, rows inserted, updated, deleted;
- RunEvent rows and their bytes; LogChunk rows (live output through the database, with a shared
  log storage).

Two workloads: N agents of `true` (the least an agent costs) and M agents that print a line every
0.2 s for 2 s with a shared log storage (the output ticks: tail, `run.output` event, live log rows).

    .venv/bin/python bench/bench_scaling.py --database-url postgres://postgres@127.0.0.1:5432/postgres \
        --redis-url redis://127.0.0.1:6379/15
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc  # noqa: E402

COUNT_APP = '''\
"""Bench only: count every SQL statement this process runs, by kind, into BENCH_COUNT_DIR/<pid>.json."""
import json, os, re, threading, time
from collections import Counter
from django.apps import AppConfig

STATE = {"pid": None, "counts": Counter()}
TABLE = re.compile(r'(?:INTO|UPDATE|FROM)\s+"?([a-z_0-9]+)"?', re.I)


def _flush():
    path = os.path.join(os.environ["BENCH_COUNT_DIR"], f"{os.getpid()}.json")
    while True:
        time.sleep(0.2)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(dict(STATE["counts"]), f)
        os.replace(tmp, path)


def _count(execute, sql, params, many, context):
    if STATE["pid"] != os.getpid():  # a forked worker: its own counts, its own flusher
        STATE["pid"], STATE["counts"] = os.getpid(), Counter()
        threading.Thread(target=_flush, daemon=True).start()
    kind = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "?"
    if kind in ("INSERT", "UPDATE", "DELETE") and (table := TABLE.search(sql)):
        kind = f"{kind} {table.group(1)}"
    STATE["counts"][kind] += len(params) if many and params else 1
    return execute(sql, params, many, context)


def _install(sender, connection, **kwargs):
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


class Count(AppConfig):
    name = "bench_count"

    def ready(self):
        from django.db.backends.signals import connection_created

        connection_created.connect(_install)
'''


PRINTING = "for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; sleep 0.2; done"


def counted(folder: Path) -> Counter:
    """The cluster's processes' statements (this process, which launches and polls, is counted apart)."""
    total: Counter = Counter()
    for path in folder.glob("*.json"):
        if path.stem == str(os.getpid()):
            continue
        with contextlib.suppress(OSError, ValueError):
            total.update(json.loads(path.read_text()))
    return total


def pg_stats() -> dict[str, int]:
    from django.db import connection

    if connection.vendor != "postgresql":
        return {}
    with connection.cursor() as c:
        c.execute("SELECT pg_stat_force_next_flush()")
        c.execute(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
        row = c.fetchone()
    return dict(zip(("commits", "inserted", "updated", "deleted"), row, strict=True))


def settle(folder: Path, seconds: float = 1.5) -> None:
    """Every process flushes its counts within 0.2 s; PostgreSQL's statistics within about a second."""
    time.sleep(seconds)


def measure(name: str, spec: dict, folder: Path) -> dict:
    import bench_count

    from spawner.models import LogChunk, RunAttempt, RunEvent

    settle(folder)
    before_sql, before_pg = counted(folder), pg_stats()
    t0 = time.monotonic()
    mine = Counter(bench_count.STATE["counts"])
    batch, _ = bc.launch(spec)
    launch_sql = sum((Counter(bench_count.STATE["counts"]) - mine).values())
    batch = bc.wait(batch, timeout=900)
    wall = time.monotonic() - t0
    polled = sum((Counter(bench_count.STATE["counts"]) - mine).values())  # this process's own transactions
    chunks = LogChunk.objects.filter(attempt__run__batch=batch).count()  # left by attempts not stored
    settle(folder)
    sql = counted(folder) - before_sql
    pg = {k: v - before_pg.get(k, 0) for k, v in pg_stats().items()}
    if pg:
        pg["commits"] -= polled  # the launch and this script's polling: autocommit statements, one each
    agents = batch.runs.count()
    events = RunEvent.objects.filter(batch=batch)
    kinds = Counter(events.values_list("kind", flat=True))
    event_bytes = sum(len(json.dumps(data)) for data in events.values_list("data", flat=True))
    attempts = RunAttempt.objects.filter(run__batch=batch).count()
    statuses = Counter(batch.runs.values_list("status", flat=True))
    return {
        "name": name,
        "batch_id": batch.id,
        "agents": agents,
        "attempts": attempts,
        "statuses": dict(statuses),
        "wall": wall,
        "sql": sql,
        "pg": pg,
        "events": sum(kinds.values()),
        "event_kinds": kinds,
        "event_bytes": event_bytes,
        "chunks_left": chunks,
        "launch_sql": launch_sql,
    }


def report(m: dict) -> None:
    n = m["agents"]
    print(f"\n## {m['name']}: {n} agents, {m['attempts']} attempts, {m['statuses']}, wall {m['wall']:.2f} s")
    print(f"   throughput {n / m['wall']:.1f} agents/s")
    total = sum(m["sql"].values())
    rows = [(kind, count, f"{count / n:.2f}") for kind, count in sorted(m["sql"].items()) if count / n >= 0.05]
    rows.append(("all statements", total, f"{total / n:.1f}"))
    rows.append(("the launch (web side)", m["launch_sql"], f"{m['launch_sql'] / n:.2f}"))
    print(bc.table(rows, ("SQL (the cluster's processes)", "total", "per agent")))
    if m["pg"]:
        rows = [(k, v, f"{v / n:.1f}") for k, v in m["pg"].items()]
        print(bc.table(rows, ("PostgreSQL (pg_stat_database)", "total", "per agent")))
    rows = [(k, v, f"{v / n:.2f}") for k, v in sorted(m["event_kinds"].items())]
    rows.append(("all events", m["events"], f"{m['events'] / n:.2f}"))
    print(bc.table(rows, ("RunEvent kind", "total", "per agent")))
    print(f"   event data: {m['event_bytes'] / max(m['events'], 1):.0f} bytes per event (JSON)")
    print(f"   events/s during the batch: {m['events'] / m['wall']:.0f}; statements/s: {total / m['wall']:.0f}")
    if m["pg"]:
        print(f"   commits/s: {m['pg']['commits'] / m['wall']:.0f}")


def event_capacity(batch_id: int, threads: int, seconds: float) -> tuple[int, float]:
    """Events committed per second by `threads` connections, each event its own transaction with the
    run-row update a transition makes beside it: a lower bound of what this PostgreSQL takes (the
    writers are Python on the same 2 cores)."""
    import threading

    from django.db import connection, transaction

    from spawner.engine import events
    from spawner.models import AgentRun

    run_id = AgentRun.objects.filter(batch_id=batch_id).values_list("id", flat=True).first()
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def write(i: int) -> None:
        try:
            while time.monotonic() < stop:
                with transaction.atomic():
                    AgentRun.objects.filter(id=run_id).update(output_tail=f"tick {counts[i]}")
                    events.record(batch_id=batch_id, run_id=run_id, attempt=1, kind="run.output", data={"bytes": 1})
                counts[i] += 1
        finally:
            connection.close()

    workers = [threading.Thread(target=write, args=(i,)) for i in range(threads)]
    t0 = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts), time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="postgres://... : a throwaway database is made on that server")
    parser.add_argument("--redis-url", help="the Redis broker and channel layer (a spare db number)")
    parser.add_argument("--workers", type=int, default=20)
    parser.add_argument("--agents", type=int, default=200, help="agents of `true`")
    parser.add_argument("--printing", type=int, default=40, help="agents printing for 2 s")
    args = parser.parse_args()

    app_dir = Path(tempfile.mkdtemp(prefix="spawner-bench-count-"))
    count_dir = app_dir / "counts"
    count_dir.mkdir()
    (app_dir / "bench_count.py").write_text(COUNT_APP)
    (app_dir / "bench_count_settings.py").write_text(
        "from spawner.settings import *  # noqa: F403\n"
        'INSTALLED_APPS = [*INSTALLED_APPS, "bench_count.Count"]  # noqa: F405\n'
    )
    sys.path.insert(0, str(app_dir))
    shared_logs = app_dir / "shared-logs"
    env = bc.setup(
        database_url=args.database_url,
        redis_url=args.redis_url,
        workers=args.workers,
        extra_env={
            "DJANGO_SETTINGS_MODULE": "bench_count_settings",
            "PYTHONPATH": os.pathsep.join([str(app_dir), str(bc.ROOT)]),
            "BENCH_COUNT_DIR": str(count_dir),
            # Finished logs to a shared storage, live output through the database (the at-scale shape).
            "SPAWNER_LOG_STORAGE_DIR": str(shared_logs),
        },
    )
    try:
        print(f"# bench_scaling: {bc.describe_backend()}, {args.workers} workers, shared log storage")
        print(f"# {bc.machine()}")
        with bc.Cluster(env):
            bc.agent_type("true", ["true"])
            bc.agent_type("sh", ["sh", "-c", "{prompt}"])
            bc.run_batch(
                {"name": "warm-up", "agent": "true", "tasks": [{"key": f"w{i}", "prompt": ""} for i in range(20)]}
            )
            results = [
                measure(
                    f"{args.agents} x `true`",
                    {
                        "name": "true",
                        "agent": "true",
                        "max_parallel": args.workers,
                        "tasks": [{"key": f"t{i}", "prompt": ""} for i in range(args.agents)],
                    },
                    count_dir,
                ),
                measure(
                    f"{args.printing} x a line every 0.2 s for 2 s",
                    {
                        "name": "printing",
                        "agent": "sh",
                        "max_parallel": args.workers,
                        "tasks": [
                            {
                                "key": f"p{i}",
                                "prompt": PRINTING,
                            }
                            for i in range(args.printing)
                        ],
                    },
                    count_dir,
                ),
            ]
        for m in results:
            report(m)
        last = results[-1]["batch_id"]
        print("\n## events committed per second (each with a run-row update, one transaction each)")
        for threads in (1, 4, 8):
            n, took = event_capacity(last, threads, 5.0)
            print(f"   {threads} connection(s): {n / took:.0f} events/s")
    finally:
        bc.cleanup()


if __name__ == "__main__":
    main()
