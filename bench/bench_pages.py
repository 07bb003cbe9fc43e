"""Page time: the batches list with 100,000 runs in the database, and a 1,000-run batch page.

The batch page carries its dependency graph (an SVG drawn on the server); its goal is tighter
(150 ms at p95), and the graph alone (layout and drawing) is measured on its own line too.

Server time is the time Django takes to answer (routing, queries, templates), measured
in-process with the test client, so the network and the browser are left out.

    .venv/bin/python bench/bench_pages.py [--batches 100] [--runs 1000] [--repeats 20]

Prints figures; asserts nothing (goal from issue 3: each page within 300 ms).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc  # noqa: E402

STATUSES = ["succeeded"] * 8 + ["failed", "running", "queued", "pending"]
LINE = "\x1b[32mok\x1b[0m step {i}: compiled module_{i}.py, 14 tests passed <fine>\n"


def populate(batches: int, runs: int, big_tail: int) -> int:
    """`batches` batches of `runs` runs (one attempt each); returns the id of the last one."""
    from django.contrib.auth.models import User
    from django.utils import timezone

    from spawner.models import AgentRun, AgentType, Batch, RunAttempt

    sh = AgentType.objects.create(name="bench-sh", argv=["sh", "-c", "{prompt}"])
    owner = User.objects.create_user("bench", password="bench-password")
    now = timezone.now()
    small_tail = "".join(LINE.format(i=i) for i in range(3))
    big = "".join(LINE.format(i=i) for i in range(big_tail // len(LINE) + 1))[-big_tail:]
    last = None
    for b in range(batches):
        started = now - timedelta(minutes=batches - b)
        last = Batch.objects.create(
            name=f"bench batch {b}",
            owner=owner if b % 3 else None,
            spec={},
            status="running" if b % 7 == 0 else "partial",
            max_parallel=16,
            launched_at=started,
            finished_at=started + timedelta(seconds=50),
            wall_seconds=50.0,
            sum_seconds=400.0,
            speedup=8.0,
            efficiency=0.5,
        )
        tail = big if b == batches - 1 else small_tail
        AgentRun.objects.bulk_create(
            [
                AgentRun(
                    batch=last,
                    key=f"task-{i:04d}",
                    agent_type=sh,
                    prompt=f"echo {i}",
                    timeout=60,
                    order=i,
                    wave=i % 5,
                    depends_on=[f"task-{i - 1:04d}"] if i % 5 else [],
                    status=random.choice(STATUSES),
                    attempt=1,
                    duration_seconds=random.uniform(1, 9),
                    started_at=started,
                    output_tail=tail,
                )
                for i in range(runs)
            ],
            batch_size=2000,
        )
        ids = AgentRun.objects.filter(batch=last).values_list("id", "status")
        RunAttempt.objects.bulk_create(
            [
                RunAttempt(
                    run_id=run_id,
                    number=1,
                    not_before=started,
                    status="running" if status == "running" else "succeeded",
                    started_at=started + timedelta(seconds=random.uniform(0, 40)),
                    finished_at=None if status in ("running", "queued", "pending") else started + timedelta(seconds=48),
                )
                for run_id, status in ids
            ],
            batch_size=2000,
        )
    return last.id


# CPU time of this process per request, beside the wall time: on a machine busy with other work
# the wall time waits for the CPU, the CPU time does not.
CPU: dict[str, list[float]] = {}


def measure(client, url: str, repeats: int) -> list[float]:
    client.get(url)  # warm: templates compiled, connection open
    times, cpu = [], CPU.setdefault(url, [])
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        response = client.get(url)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        assert response.status_code == 200, (url, response.status_code)
    return times


def graph_time(batch_id: int, repeats: int) -> tuple[list[float], int]:
    """The dependency graph of one batch: read, laid out, drawn (as the page and the live update do)."""
    from django.template.loader import render_to_string

    from dashboard.pages.graph import graph_context
    from spawner.models import Batch

    batch = Batch.objects.get(id=batch_id)
    html = render_to_string("dashboard/_graph.html", graph_context(batch))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        render_to_string("dashboard/_graph.html", graph_context(batch))
        times.append(time.perf_counter() - t0)
    return times, len(html)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--runs", type=int, default=1000, help="runs per batch")
    parser.add_argument("--tail", type=int, default=16_384, help="bytes of output tail per run of the big batch")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--database-url", help="postgres://... for a throwaway PostgreSQL database")
    args = parser.parse_args()

    bc.setup(database_url=args.database_url)
    try:
        from django.conf import settings
        from django.contrib.auth.models import User
        from django.test import Client

        from dashboard.live.topics import BatchTopic
        from spawner.models import AgentRun, RunEvent

        settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
        print(f"machine: {bc.machine()}")
        print(f"backend: {bc.describe_backend()}")
        t0 = time.perf_counter()
        big_id = populate(args.batches, args.runs, args.tail)
        total = AgentRun.objects.count()
        print(f"populated {args.batches} batches, {total:,} runs in {time.perf_counter() - t0:.1f} s")
        RunEvent.objects.create(batch_id=big_id, kind="bench.mark")

        client = Client()
        client.force_login(User.objects.get(username="bench"))
        big_run = AgentRun.objects.filter(batch_id=big_id).order_by("order").first()
        pages = [
            ("batches list, page 1", "/"),
            ("batches list, page 3, status=partial", "/?status=partial&page=3"),
            (f"batch page, {args.runs:,} runs", f"/batches/{big_id}/"),
            ("run page (16 KB tail)", f"/runs/{big_run.id}/"),
            ("compare page", f"/batches/{big_id}/compare/"),
        ]
        rows = []
        batch_page_times: list[float] = []
        for name, url in pages:
            times = measure(client, url, args.repeats)
            if url == f"/batches/{big_id}/":
                batch_page_times = times
                assert b'class="graph-svg"' in client.get(url).content, "the batch page has no graph"
            size = len(client.get(url).content)
            cpu = bc.ms(bc.pct(CPU[url], 95))
            rows.append((name, bc.ms(bc.pct(times, 50)), bc.ms(bc.pct(times, 95)), f"{size / 1024:.0f} KiB", cpu))
        topic = BatchTopic(big_id)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            topic.snapshot()
            times.append(time.perf_counter() - t0)
        rows.append(
            (f"websocket snapshot, {args.runs:,} runs", bc.ms(bc.pct(times, 50)), bc.ms(bc.pct(times, 95)), "", "")
        )
        graph_times, graph_size = graph_time(big_id, args.repeats)
        rows.append(
            (
                f"dependency graph alone, {args.runs:,} runs",
                bc.ms(bc.pct(graph_times, 50)),
                bc.ms(bc.pct(graph_times, 95)),
                f"{graph_size / 1024:.0f} KiB",
                "",
            )
        )
        print()
        print(f"server time over {args.repeats} requests each (goal: 300 ms)")
        print(bc.table(rows, ("page", "p50", "p95", "size", "CPU p95")))
        page_p95 = bc.pct(batch_page_times, 95)
        verdict = "within" if page_p95 <= 0.150 else "over"
        cpu_p95 = bc.pct(CPU[f"/batches/{big_id}/"], 95)
        print(
            f"\nbatch page of {args.runs:,} runs, dependency graph included: p95 {bc.ms(page_p95)} "
            f"({verdict} the 150 ms goal); CPU p95 {bc.ms(cpu_p95)}"
        )
        print("\ncommand: .venv/bin/python bench/bench_pages.py " + " ".join(sys.argv[1:]))
    finally:
        bc.cleanup()


if __name__ == "__main__":
    main()
