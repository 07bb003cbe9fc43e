"""Engine benchmarks against `xargs -P` on the same machine (issue 2, section Benchmarks).

    .venv/bin/python bench/bench_engine.py                      # embedded default: SQLite + ORM broker
    .venv/bin/python bench/bench_engine.py --database-url postgres://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/bench_engine.py --database-url postgres://postgres@127.0.0.1:5432/test \
        --redis-url redis://127.0.0.1:6379/15

Each run uses a throwaway database (a temp-dir SQLite file, or a fresh PostgreSQL
database created next to the one named and dropped at the end), starts a real
`manage.py spawner_cluster` subprocess on it, launches batches through
`spawner.services.batch_launch` and polls `Batch.status` every 20 ms.

It prints figures and ratios; it asserts nothing. Measurements:
  1. 16 x `sleep 2`, max_parallel 16: wall vs `xargs -P16`, and vs sequential mode.
  2. dispatch latency, batch launch -> each agent process start (p50, p95), split into parts.
  3. 200 x `true`, max_parallel 20: agents per second, vs `xargs -P20`.
  4. memory of the cluster's processes per concurrent agent.

Experiment flags (engine code untouched; settings layered in the temp dir):
--conn-max-age N, --env SPAWNER_POLL_SECONDS=0.02, --q bulk=16, --gc-freeze. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc  # noqa: E402

# Each agent stamps the moment its process runs into the result file Spawner gives it.
STAMP_SCRIPT = 'printf \'{"t": %s}\' "$(date +%s.%N)" > "$SPAWNER_RESULT_FILE"'
XARGS_STAMP_SCRIPT = 'date +%s.%N > "$0"'


def spec(name: str, agent: str, prompts: list[str], max_parallel: int, **extra) -> dict:
    return {
        "name": name,
        "agent": agent,
        "max_parallel": max_parallel,
        "tasks": [{"key": f"t{i:03d}", "prompt": p} for i, p in enumerate(prompts)],
        **extra,
    }


def header(title: str) -> None:
    print(f"\n== {title}", flush=True)


# --- 1. sixteen sleepers -----------------------------------------------------------------


def bench_sleepers(n: int, seconds: float, repeats: int, sequential: bool) -> dict:
    header(f"1. {n} agents of `sleep {seconds:g}`, max_parallel {n}")
    walls, engine_walls, xargs_walls = [], [], []
    for i in range(repeats):
        batch, wall = bc.run_batch(spec(f"sleep{n}-{i}", "sleep", [f"{seconds:g}"] * n, n))
        walls.append(wall)
        engine_walls.append(batch.wall_seconds)
        x = bc.xargs([f"{seconds:g}"] * n, ["sleep"], n)
        xargs_walls.append(x)
        print(
            f"   run {i + 1}: spawner {wall:.3f} s (Batch.wall_seconds {batch.wall_seconds:.3f}, "
            f"{batch.status}) | xargs -P{n} {x:.3f} s | ratio {wall / x:.3f}"
        )
    out = {
        "seconds": seconds,
        "wall": bc.pct(walls, 50),
        "engine_wall": bc.pct(engine_walls, 50),
        "xargs": bc.pct(xargs_walls, 50),
    }
    out["ratio"] = out["wall"] / out["xargs"]
    print(
        f"   median: spawner {out['wall']:.3f} s, xargs {out['xargs']:.3f} s, "
        f"ratio spawner/xargs {out['ratio']:.3f} (goal <= 1.10; <= 1.05 at scale)"
    )
    from spawner.models import RunAttempt

    last = RunAttempt.objects.filter(run__batch=batch)
    over = [(a.finished_at - a.started_at).total_seconds() - seconds for a in last if a.finished_at and a.started_at]
    print(
        f"   per-attempt overhead in the last batch (claim -> recorded end, minus {seconds:g} s): "
        f"p50 {bc.ms(bc.pct(over, 50))}, max {bc.ms(max(over))}"
    )
    if sequential:
        batch, wall = bc.run_batch(spec(f"sleep{n}-seq", "sleep", [f"{seconds:g}"] * n, n), mode="sequential")
        out["seq_wall"] = wall
        out["seq_engine_wall"] = batch.wall_seconds
        out["speedup"] = wall / out["wall"]
        gaps = _sequential_gaps(batch)
        print(
            f"   sequential: {wall:.3f} s (Batch.wall_seconds {batch.wall_seconds:.3f}, {batch.status}); "
            f"speedup sequential/parallel {out['speedup']:.2f}x (goal >= 14; ideal {n}x)"
        )
        print(
            f"   sequential hand-off (one run's recorded end -> next run's claim): "
            f"p50 {bc.ms(bc.pct(gaps, 50))}, max {bc.ms(max(gaps))}; per run overall "
            f"{(wall - n * seconds) / n * 1000:.0f} ms above {seconds:g} s"
        )
    return out


def _sequential_gaps(batch) -> list[float]:
    from spawner.models import RunAttempt

    rows = list(RunAttempt.objects.filter(run__batch=batch).order_by("started_at"))
    return [(b.started_at - a.finished_at).total_seconds() for a, b in zip(rows, rows[1:], strict=False)]


# --- 2. dispatch latency -------------------------------------------------------------------


def bench_latency(cluster: bc.Cluster, batches: int, n: int) -> dict:
    from django_q.models import Task

    from spawner.models import RunAttempt

    header(f"2. dispatch latency: {batches} batches of {n} agents (sh -c 'date' into SPAWNER_RESULT_FILE)")
    total, launch_call, enqueued, to_claim, claim_to_proc = [], [], [], [], []
    cpu_busy = []
    for i in range(batches):
        cpu0 = bc.cpu_of(cluster)
        batch, t0 = bc.launch(spec(f"latency-{i}", "stamp", [""] * n, n))
        t_ret = time.time()
        batch = bc.wait(batch)
        cpu1 = bc.cpu_of(cluster)
        cpu_busy.append({k: cpu1[k] - cpu0[k] for k in cpu0} | {"wall": batch.ended_at - t0})
        # q2 stamps a task's `started` when async_task is called (the enqueue), and its
        # monitor stores it once the task is done: wait for the n task records.
        deadline = time.monotonic() + 3
        while Task.objects.filter(group=f"batch-{batch.id}").count() < n and time.monotonic() < deadline:
            time.sleep(0.02)
        enqueued_at = {
            int(name.split("-")[1]): started.timestamp()
            for name, started in Task.objects.filter(group=f"batch-{batch.id}").values_list("name", "started")
        }
        rows = RunAttempt.objects.filter(run__batch=batch).values_list("id", "run__result", "started_at")
        starts = []
        for attempt_id, result, started_at in rows:
            t_proc = float(result["t"])
            starts.append(t_proc - t0)
            if attempt_id in enqueued_at:
                enqueued.append(enqueued_at[attempt_id] - t0)
                to_claim.append(started_at.timestamp() - enqueued_at[attempt_id])
            claim_to_proc.append(t_proc - started_at.timestamp())
        total.extend(starts)
        launch_call.append(t_ret - t0)
        print(
            f"   batch {i + 1}: p50 {bc.ms(bc.pct(starts, 50))}, max {bc.ms(max(starts))} "
            f"(batch_launch call {bc.ms(t_ret - t0)}, {batch.status})"
        )
    # Same stamping under xargs: how long a plain fork/exec fan-out takes to start n processes.
    tmp = bc.STATE["tmp"] / "xargs-stamps"
    tmp.mkdir(exist_ok=True)
    files = [str(tmp / f"{i}") for i in range(n)]
    t0 = time.time()
    bc.xargs(files, ["sh", "-c", XARGS_STAMP_SCRIPT], n)
    xs = [float(Path(f).read_text()) - t0 for f in files]
    out = {
        "p50": bc.pct(total, 50),
        "p95": bc.pct(total, 95),
        "max": max(total),
        "launch_call": bc.pct(launch_call, 50),
        "enq_p50": bc.pct(enqueued, 50),
        "enq_p95": bc.pct(enqueued, 95),
        "claim_p50": bc.pct(to_claim, 50),
        "claim_p95": bc.pct(to_claim, 95),
        "proc_p50": bc.pct(claim_to_proc, 50),
        "proc_p95": bc.pct(claim_to_proc, 95),
        "xargs_p50": bc.pct(xs, 50),
        "xargs_p95": bc.pct(xs, 95),
    }
    print(
        f"   launch -> process start over {len(total)} agents: p50 {bc.ms(out['p50'])}, "
        f"p95 {bc.ms(out['p95'])}, max {bc.ms(out['max'])} (goal p50 <= 30 ms, p95 <= 80 ms)"
    )
    print(f"   parts, p50 / p95 over agents ({len(enqueued)} with a q2 task record):")
    print(
        f"     a. launch -> its q2 message enqueued (plan, rows, commit, then one insert per attempt): "
        f"{bc.ms(out['enq_p50'])} / {bc.ms(out['enq_p95'])}; "
        f"whole batch_launch call {bc.ms(out['launch_call'])}"
    )
    print(
        f"     b. enqueued -> attempt claimed by a worker (q2 pusher + worker + load + claim): "
        f"{bc.ms(out['claim_p50'])} / {bc.ms(out['claim_p95'])}"
    )
    print(
        f"     c. claimed -> agent process runs (log path, env, Popen, exec): "
        f"{bc.ms(out['proc_p50'])} / {bc.ms(out['proc_p95'])}"
    )
    print(
        f"   xargs -P{n} baseline, start -> each process: p50 {bc.ms(out['xargs_p50'])}, p95 {bc.ms(out['xargs_p95'])}"
    )
    return out


# --- 3. throughput ---------------------------------------------------------------------------


def bench_throughput(cluster: bc.Cluster, n: int, parallel: int) -> dict:
    from spawner.models import RunAttempt, RunEvent

    header(f"3. {n} agents of `true`, max_parallel {parallel}")
    time.sleep(1.5)  # PostgreSQL publishes each backend's counters within a second or so
    writes0 = bc.pg_writes()
    cpu0 = bc.cpu_of(cluster)
    batch, wall = bc.run_batch(spec(f"true{n}", "true", [""] * n, parallel))
    cpu1 = bc.cpu_of(cluster)
    time.sleep(1.5)
    writes1 = bc.pg_writes()
    x = bc.xargs(["x"] * n, ["true"], parallel)
    rows = list(RunAttempt.objects.filter(run__batch=batch).values_list("started_at", "finished_at"))
    held = [(f - s).total_seconds() for s, f in rows if s and f]
    events = RunEvent.objects.filter(batch=batch).count()
    out = {"wall": wall, "rate": n / wall, "xargs": x, "xargs_rate": n / x, "engine_wall": batch.wall_seconds}
    print(
        f"   spawner: {wall:.3f} s (Batch.wall_seconds {batch.wall_seconds:.3f}, {batch.status}) "
        f"= {out['rate']:.1f} agents/s end to end"
    )
    print(
        f"   xargs -P{parallel}: {x:.3f} s = {out['xargs_rate']:.0f} agents/s; ratio spawner/xargs wall {wall / x:.0f}x"
    )
    print(
        f"   each attempt held its worker (claim -> recorded end): p50 {bc.ms(bc.pct(held, 50))}, "
        f"p95 {bc.ms(bc.pct(held, 95))}; {events} events written"
    )
    if writes0 and writes1:
        per = {k: (writes1[k] - writes0[k]) / n for k in writes0}
        out["writes"] = per
        print(
            f"   writes per agent (PostgreSQL counters over the batch, all processes): "
            f"{per['commits']:.1f} transactions, rows {per['inserted']:.1f} inserted / {per['updated']:.1f} "
            f"updated / {per['deleted']:.1f} deleted = {per['inserted'] + per['updated'] + per['deleted']:.1f} rows"
        )
    print(
        f"   ceiling from that hold time alone: {parallel} / {bc.pct(held, 50):.3f} s = "
        f"{parallel / bc.pct(held, 50):.0f} agents/s"
    )
    used = {k: cpu1[k] - cpu0[k] for k in cpu0}
    cores = os.cpu_count() or 1
    out["cpu"] = used["machine"] / (cores * wall)
    print(
        f"   CPU during the batch: cluster {used['cluster']:.2f} s ({used['cluster'] / n * 1000:.0f} ms per agent), "
        f"agents {used['agents']:.2f} s, this script {used['bench']:.2f} s; whole machine "
        f"{used['machine']:.2f} s = {out['cpu'] * 100:.0f}% of {cores} cores x {wall:.2f} s"
    )
    return out


# --- 4. memory ---------------------------------------------------------------------------------


def bench_memory(cluster: bc.Cluster, n: int, seconds: float, cold: dict) -> dict:

    from spawner.models import AgentRun, RunAttempt
    from spawner.states import RunStatus

    header(f"4. memory: {n} concurrent `sleep {seconds:g}` agents on {bc.STATE['workers']} workers")
    time.sleep(0.5)
    idle_procs, _ = cluster.processes()
    idle_by_pid = {p.pid: p for p in idle_procs}
    idle = bc.memory(idle_procs)
    batch, _t0 = bc.launch(spec(f"memory{n}", "sleep", [f"{seconds:g}"] * n, n))
    deadline = time.monotonic() + seconds
    while AgentRun.objects.filter(batch=batch, status=RunStatus.RUNNING).count() < n:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    time.sleep(1.0)  # let every worker settle into its supervise loop
    running = AgentRun.objects.filter(batch=batch, status=RunStatus.RUNNING).count()
    procs, agents = cluster.processes()
    busy = bc.memory(procs)
    agent_mem = bc.memory(agents)
    worker_pids = set(RunAttempt.objects.filter(run__batch=batch).values_list("worker_pid", flat=True))
    workers_busy = bc.memory([p for p in procs if p.pid in worker_pids])
    workers_idle = bc.memory([idle_by_pid[pid] for pid in worker_pids if pid in idle_by_pid])
    base_busy = bc.memory([p for p in procs if p.pid not in worker_pids])
    bc.wait(batch)
    keys = ("rss", "pss", "uss")
    per = {k: (workers_busy[k] - workers_idle[k]) / max(running, 1) for k in keys}
    slot = {k: workers_busy[k] / max(workers_busy["n"], 1) for k in keys}
    out = {
        "cold": cold,
        "idle": idle,
        "busy": busy,
        "agents": agent_mem,
        "running": running,
        "per": per,
        "slot": slot,
        "base": base_busy,
    }
    fmt = lambda m: [f"{m[k]:.0f}" for k in keys]  # noqa: E731
    rows = [
        ("whole cluster, cold idle (just started)", cold["n"], *fmt(cold)),
        ("whole cluster, warm idle (after the batches)", idle["n"], *fmt(idle)),
        (f"whole cluster, {running} agents running", busy["n"], *fmt(busy)),
        (f"  the {workers_busy['n']} workers running them", workers_busy["n"], *fmt(workers_busy)),
        ("  the same workers at warm idle", workers_idle["n"], *fmt(workers_idle)),
        ("  the rest (main + reaper, sentinel, pusher, monitor)", base_busy["n"], *fmt(base_busy)),
        (f"the {agent_mem['n']} agent processes (not in the cluster figures)", agent_mem["n"], *fmt(agent_mem)),
    ]
    print("   " + bc.table(rows, ("MiB, summed", "procs", "RSS", "PSS", "USS")).replace("\n", "\n   "))
    print(
        f"   a running agent adds to its worker: RSS {per['rss']:+.2f} MiB, PSS {per['pss']:+.2f} MiB, "
        f"USS {per['uss']:+.2f} MiB (workers are pre-forked: the cost is the worker itself)"
    )
    print(
        f"   so each concurrent agent costs one worker: RSS {slot['rss']:.1f} MiB (mostly shared), "
        f"PSS {slot['pss']:.1f} MiB, USS {slot['uss']:.1f} MiB; plus the agent's own process "
        f"({agent_mem['rss'] / max(agent_mem['n'], 1):.1f} MiB RSS for `sleep`)"
    )
    return out


def idle_cost(cluster: bc.Cluster, seconds: float) -> dict:
    """What an idle cluster costs: CPU (the broker poll, the reaper) and, on PostgreSQL, new sessions."""
    from django.db import connection

    def sessions() -> int | None:
        if connection.vendor != "postgresql":
            return None
        with connection.cursor() as c:
            c.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
            return c.fetchone()[0]

    time.sleep(0.5)
    s0, c0 = sessions(), bc.cpu_of(cluster)
    time.sleep(seconds)
    s1, c1 = sessions(), bc.cpu_of(cluster)
    out = {"cpu": (c1["cluster"] - c0["cluster"]) / seconds}
    extra = ""
    if s0 is not None:
        out["sessions"] = (s1 - s0) / seconds
        extra = f", {out['sessions']:.0f} new PostgreSQL sessions/s"
    print(f"idle cluster over {seconds:g} s: {out['cpu'] * 100:.1f}% of one core{extra}")
    return out


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", help="postgres://... : a throwaway database is created on that server")
    p.add_argument("--redis-url", help="use the Redis broker at this URL (use a spare db number, e.g. /15)")
    p.add_argument("--workers", type=int, default=20, help="SPAWNER_WORKERS for the cluster (default 20)")
    p.add_argument("--repeats", type=int, default=3, help="runs of the 16-sleeper batch (default 3)")
    p.add_argument("--sleep", type=float, default=2.0, help="seconds each agent of measurement 1 sleeps (default 2)")
    p.add_argument("--no-sequential", action="store_true", help="skip the ~35 s sequential run")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra SPAWNER_* setting for both sides, for experiments (repeatable)",
    )
    p.add_argument(
        "--q",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a Q_CLUSTER key, e.g. --q bulk=4 (via a temp settings module)",
    )
    p.add_argument("--conn-max-age", type=int, help="experiment: CONN_MAX_AGE for both sides (default: settings)")
    p.add_argument("--gc-freeze", action="store_true", help="experiment: gc.freeze() in the cluster before it forks")
    p.add_argument("--only", default="1234", help="which measurements to run, e.g. --only 23")
    p.add_argument(
        "--latency",
        default="5x16",
        metavar="BxN",
        help="measurement 2: B batches of N agents (default 5x16; 30x1 isolates one dispatch from the crowd)",
    )
    p.add_argument("--clusters", type=int, default=1, help="spawner_cluster processes, --workers each (default 1)")
    p.add_argument(
        "--busy",
        nargs="?",
        type=int,
        const=os.cpu_count() or 1,
        default=0,
        metavar="N",
        help="run N CPU-bound spinning processes beside the bench (default N: one per core)",
    )
    p.add_argument(
        "--wake-baseline",
        action="store_true",
        help="first run measurement 2 with wake-ups off (SPAWNER_WAKE=off, polls only), then as configured",
    )
    args = p.parse_args()

    extra_env = dict(kv.split("=", 1) for kv in args.env)
    latency = tuple(int(x) for x in args.latency.lower().split("x", 1))
    q_over = {k: _literal(v) for k, v in (kv.split("=", 1) for kv in args.q)} or None
    command = " ".join([".venv/bin/python", "bench/bench_engine.py", *map(shlex.quote, sys.argv[1:])])
    machine = bc.machine()
    started = time.monotonic()
    env = bc.setup(
        database_url=args.database_url,
        redis_url=args.redis_url,
        workers=args.workers,
        extra_env=extra_env,
        q_cluster=q_over,
        conn_max_age=args.conn_max_age,
        gc_freeze=args.gc_freeze,
    )
    bc.STATE["workers"] = args.workers
    from django.conf import settings

    backend = bc.describe_backend() + (f", {args.clusters} clusters" if args.clusters > 1 else "")
    backend += f", wake-ups {'on' if settings.SPAWNER['WAKE'] else 'off'}" + (
        f", beside {args.busy} CPU-bound spinners (--busy)" if args.busy else ", no added load"
    )
    print(f"machine: {machine}")
    print(
        f"backend: {backend}; {args.workers} q2 workers, broker poll {settings.Q_CLUSTER['poll']} s, "
        f"bulk {settings.Q_CLUSTER.get('bulk', 1)}, supervise poll {settings.SPAWNER['POLL_SECONDS']} s"
        + f", CONN_MAX_AGE {settings.DATABASES['default']['CONN_MAX_AGE']}"
        + (", gc.freeze() before fork" if args.gc_freeze else "")
        + (f"; overrides {extra_env or ''} {q_over or ''}" if extra_env or q_over else "")
    )
    print(f"command: {command}")
    print(f"clusters: {args.clusters}; wake-ups {'on' if settings.SPAWNER['WAKE'] else 'off'}")
    busy = bc.Busy(args.busy) if args.busy else None
    if busy:
        print(f"busy: {args.busy} CPU-bound processes spinning beside the bench")

    bc.agent_type("sleep", ["sleep", "{prompt}"])
    bc.agent_type("true", ["true"])
    bc.agent_type("stamp", ["sh", "-c", STAMP_SCRIPT])
    results: dict = {}
    cluster = None
    try:
        if args.wake_baseline:
            wake_on = settings.SPAWNER["WAKE"]
            settings.SPAWNER["WAKE"] = False
            cluster = start_clusters({**env, "SPAWNER_WAKE": "off"}, args.clusters, args.workers)
            header("wake-ups off (polls only): the baseline for measurement 2, same process")
            results["latency_nowake"] = bench_latency(cluster, *latency)
            cluster.stop()
            settings.SPAWNER["WAKE"] = wake_on
        cluster = start_clusters(env, args.clusters, args.workers)
        procs, _ = cluster.processes()
        cold = bc.memory(procs)
        results["idle"] = idle_cost(cluster, 3.0)
        if "1" in args.only:
            results["sleep"] = bench_sleepers(16, args.sleep, args.repeats, sequential=not args.no_sequential)
        if "2" in args.only:
            results["latency"] = bench_latency(cluster, *latency)
        if "3" in args.only:
            results["throughput"] = bench_throughput(cluster, 200, 20)
        if "4" in args.only:
            results["memory"] = bench_memory(cluster, args.workers, 5, cold)
    finally:
        if cluster:
            cluster.stop()
        if busy:
            busy.stop()
        bc.cleanup()
    summary(results, machine=machine, backend=backend, command=command, seconds=time.monotonic() - started)


def start_clusters(env: dict, count: int, workers: int) -> bc.Clusters:
    cluster = bc.Clusters(env, count)
    ready = cluster.start()
    print(f"cluster pid(s) {cluster.pid} ready (heartbeat seen) after {ready:.2f} s")
    # Warm-up: one task per worker, so no measured batch pays the first-task imports.
    n = workers * count
    batch, wall = bc.run_batch(spec(f"warmup-{time.time()}", "sleep", ["0.3"] * n, n))
    print(f"warm-up: {n} x `sleep 0.3` in {wall:.3f} s (first batch after start, {batch.status})")
    return cluster


def _literal(text: str):
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def summary(r: dict, *, machine: str, backend: str, command: str, seconds: float) -> None:
    rows = []
    if s := r.get("sleep"):
        label = f"16 x sleep {s['seconds']:g}, wall (median)"
        rows.append((label, f"{s['wall']:.3f} s", f"xargs -P16 {s['xargs']:.3f} s", f"{s['ratio']:.3f}", "<= 1.05"))
        rows.append(("  Batch.wall_seconds (engine)", f"{s['engine_wall']:.3f} s", "", "", ""))
        if "speedup" in s:
            rows.append(
                (
                    "  sequential mode, wall",
                    f"{s['seq_wall']:.3f} s",
                    "speedup seq/par",
                    f"{s['speedup']:.2f}x",
                    ">= 14",
                )
            )
    if lat := r.get("latency"):
        off = r.get("latency_nowake")
        for q, goal in (("p50", "<= 30 ms"), ("p95", "<= 80 ms")):
            rows.append(
                (
                    f"dispatch latency {q}",
                    bc.ms(lat[q]),
                    f"xargs {bc.ms(lat['xargs_' + q])}" + (f"; polls only {bc.ms(off[q])}" if off else ""),
                    f"{lat[q] / off[q]:.2f} of polls only" if off else "",
                    goal,
                )
            )
        parts = f"{bc.ms(lat['enq_p50'])} / {bc.ms(lat['claim_p50'])} / {bc.ms(lat['proc_p50'])}"
        rows.append(("  parts p50: enqueue / pickup+claim / spawn", parts, "", "", ""))
        if off:
            parts = f"{bc.ms(off['enq_p50'])} / {bc.ms(off['claim_p50'])} / {bc.ms(off['proc_p50'])}"
            rows.append(("  same, polls only", parts, "", "", ""))
    if t := r.get("throughput"):
        rows.append(
            (
                "200 x true, max_parallel 20",
                f"{t['rate']:.1f} agents/s",
                f"xargs {t['xargs_rate']:.0f}/s",
                f"{t['wall'] / t['xargs']:.0f}x slower",
                ">= 150/s at scale",
            )
        )
        if w := t.get("writes"):
            rows.append(
                (
                    "  writes per agent (PostgreSQL)",
                    f"{w['commits']:.1f} transactions",
                    f"{w['inserted'] + w['updated'] + w['deleted']:.1f} rows written",
                    "",
                    "",
                )
            )
    if i := r.get("idle"):
        extra = f", {i['sessions']:.0f} new PG sessions/s" if "sessions" in i else ""
        rows.append(("idle cluster", f"{i['cpu'] * 100:.1f}% of a core{extra}", "", "", ""))
    if m := r.get("memory"):
        rows.append(
            (
                "memory per concurrent agent (1 worker)",
                f"PSS {m['slot']['pss']:.1f} MiB",
                f"USS {m['slot']['uss']:.1f} MiB",
                f"RSS {m['slot']['rss']:.0f} MiB",
                "",
            )
        )
        rows.append(("  added by running an agent", f"PSS {m['per']['pss']:+.2f} MiB", "", "", ""))
        rows.append(
            (
                "cluster total while running",
                f"RSS {m['busy']['rss']:.0f} MiB",
                f"PSS {m['busy']['pss']:.0f} MiB",
                f"{m['busy']['n']} procs",
                "",
            )
        )
    print("\n== summary")
    print(f"machine: {machine}")
    print(f"backend: {backend}")
    print(f"command: {command}  ({seconds:.0f} s)")
    print(bc.table(rows, ("measure", "spawner", "baseline", "ratio", "goal")))


if __name__ == "__main__":
    main()
