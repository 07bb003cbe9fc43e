"""Database work per agent, counted (not timed): what each agent costs the database whatever the load.

    .venv/bin/python bench/bench_queries.py                 # embedded default: SQLite + ORM broker
    .venv/bin/python bench/bench_queries.py --database-url postgres://postgres@127.0.0.1:5432/test \\
        --redis-url redis://127.0.0.1:6379/15                # the at-scale shape

Launches a batch of `--agents` x `true` (max_parallel = agents) through `spawner.services.batch_launch`
and then runs each attempt's q2 task body (`spawner.engine.tasks.execute_attempt`) in this process, one
after another, the way a worker would, with Django's query log on. Prints the statements per agent
by kind (SELECT, INSERT, UPDATE, DELETE, transaction control) for the launch and for the execution,
and the statements that repeat most. The broker's own work (the pusher's take and q2's result and
acknowledgement, done by the cluster's processes) is not in these counts; bench_engine.py's
"writes per agent" counts everything PostgreSQL saw.

Counts do not depend on the machine's load; they are the figures the scaling notes need.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc  # noqa: E402

KINDS = ("SELECT", "INSERT", "UPDATE", "DELETE", "SAVEPOINT", "RELEASE", "BEGIN", "COMMIT", "ROLLBACK")


def kind(sql: str) -> str:
    word = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "?"
    return word if word in KINDS else "other"


def shape(sql: str) -> str:
    """The statement without its values, to group repeats."""
    text = re.sub(r"'[^']*'", "?", sql)
    text = re.sub(r"\b\d+(\.\d+)?\b", "?", text)
    text = re.sub(r"\(\?(, \?)*\)", "(...)", text)
    return text[:150]


def counted(fn):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        value = fn()
    return value, [q["sql"] for q in ctx.captured_queries]


def report(title: str, statements: list[str], agents: int, limit: int = 8) -> None:
    by_kind = Counter(kind(s) for s in statements)
    writes = sum(by_kind[k] for k in ("INSERT", "UPDATE", "DELETE"))
    print(f"\n== {title}: {len(statements)} statements = {len(statements) / agents:.1f} per agent")
    print("   " + ", ".join(f"{k} {v / agents:.2f}" for k, v in by_kind.most_common()))
    print(f"   writes (INSERT + UPDATE + DELETE) per agent: {writes / agents:.2f}")
    print("   most repeated:")
    for text, n in Counter(shape(s) for s in statements).most_common(limit):
        print(f"     {n / agents:5.2f} x  {text}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", help="postgres://... : a throwaway database is created on that server")
    p.add_argument("--redis-url", help="use the Redis broker at this URL (use a spare db number)")
    p.add_argument("--agents", type=int, default=20)
    args = p.parse_args()
    bc.setup(database_url=args.database_url, redis_url=args.redis_url, workers=2)
    try:
        from django.conf import settings

        from spawner.engine import tasks
        from spawner.models import AgentRun, RunAttempt
        from spawner.states import AttemptStatus

        settings.DEBUG = True
        print(f"backend: {bc.describe_backend()}; {args.agents} x `true`, one batch")
        bc.agent_type("true", ["true"])
        n = args.agents
        data = {
            "name": "queries",
            "agent": "true",
            "max_parallel": n,
            "tasks": [{"key": f"t{i:03d}", "prompt": ""} for i in range(n)],
        }
        batch_spec, text = bc.load(data)
        from spawner import services

        batch, launch_sql = counted(
            lambda: services.batch_launch(
                batch_spec=batch_spec, base_dir=bc.STATE["tmp"], spec_data=data, spec_text=text
            )
        )
        report("launch (services.batch_launch)", launch_sql, n)
        attempts = list(
            RunAttempt.objects.filter(run__batch=batch, status=AttemptStatus.QUEUED).values_list("id", flat=True)
        )
        run_sql: list[str] = []
        for attempt_id in attempts:
            _, sql = counted(lambda attempt_id=attempt_id: tasks.execute_attempt(attempt_id))
            run_sql += sql
        report("execution (each attempt's task body: claim, start, supervise, end, advance)", run_sql, n, limit=30)
        statuses = Counter(AgentRun.objects.filter(batch=batch).values_list("status", flat=True))
        total = (len(launch_sql) + len(run_sql)) / n
        print(f"\nruns: {dict(statuses)}; statements per agent, launch + execution: {total:.1f}")
        print("command: .venv/bin/python bench/bench_queries.py " + " ".join(sys.argv[1:]))
    finally:
        bc.cleanup()


if __name__ == "__main__":
    main()
