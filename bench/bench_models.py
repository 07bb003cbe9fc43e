"""Model agents: 50 streamed calls against the scripted OpenAI-compatible server (issue 10, Benchmarks).

    .venv/bin/python bench/bench_models.py                        # 50 agents, 100 tokens at 20 ms each
    .venv/bin/python bench/bench_models.py --agents 20 --workers 20 --tokens 50

A throwaway SQLite database and a real `manage.py spawner_cluster` (see _common.py); the scripted
server (tests/support/model_server.py) runs in this process on 127.0.0.1 and streams each answer a
word at a time, `--delay` seconds apart. It prints figures and ratios; it asserts nothing.

  1. N model agents at once (max_parallel N): wall vs the ideal (one answer's streaming time,
     tokens x delay), the overhead per agent (its attempt's duration minus the streaming time),
     and the dispatch spread (launch -> each attempt started); then the same with N CLI agents
     making the same call (below), as the baseline on the same machine and server.
  2. memory per concurrent agent: the same N as model agents (a thread in the worker that
     supervises it) and as CLI agents doing the same call (a `python3` process streaming the same
     answer with the standard library, a small stand-in for a real CLI: Node-based CLIs weigh more).
     Each concurrent agent holds one pre-forked worker either way; the figures are what running
     the agent adds to that worker, plus the agent's own processes.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc  # noqa: E402

# A CLI agent making the same call: stream the answer, print it.
CLI_SCRIPT = r"""
import json, sys, urllib.request
body = json.dumps({"model": "scripted", "stream": True,
                   "messages": [{"role": "user", "content": sys.argv[2]}]}).encode()
req = urllib.request.Request(sys.argv[1] + "/chat/completions", body, {"Content-Type": "application/json"})
with urllib.request.urlopen(req) as r:
    for line in r:
        line = line.decode().strip()
        if line.startswith("data: {"):
            for c in json.loads(line[6:]).get("choices") or []:
                print((c.get("delta") or {}).get("content") or "", end="", flush=True)
"""


def spec(name: str, agent: str, n: int, prompt: str = "answer") -> dict:
    return {
        "name": name,
        "agent": agent,
        "max_parallel": n,
        "tasks": [{"key": f"t{i:03d}", "prompt": f"{prompt} {i}"} for i in range(n)],
    }


def header(title: str) -> None:
    print(f"\n== {title}", flush=True)


def bench_wall(n: int, ideal: float, agent: str = "model") -> dict:
    from spawner.models import RunAttempt

    header(f"1{'' if agent == 'model' else 'b'}. {n} {agent} agents at once, each streaming {ideal:.2f} s")
    batch, t0 = bc.launch(spec(f"{agent}{n}", agent, n))
    batch = bc.wait(batch)
    wall = batch.ended_at - t0
    attempts = list(RunAttempt.objects.filter(run__batch=batch).values_list("started_at", "finished_at", "status"))
    durations = [(f - s).total_seconds() for s, f, _ in attempts if s and f]
    starts = sorted(s.timestamp() - t0 for s, _, _ in attempts if s)
    out = {
        "status": batch.status,
        "wall": wall,
        "ideal": ideal,
        "ratio": wall / ideal,
        "overhead_p50": statistics.median(durations) - ideal,
        "overhead_max": max(durations) - ideal,
        "start_p50": bc.pct(starts, 50),
        "start_max": max(starts),
        "amortised": (wall - ideal) / n,
    }
    print(
        f"   batch {batch.status}: wall {wall:.2f} s vs ideal {ideal:.2f} s = {out['ratio']:.2f}x; "
        f"(wall - ideal) / {n} = {out['amortised'] * 1000:.0f} ms per agent"
    )
    print(
        f"   per agent: attempt duration - streaming time p50 {out['overhead_p50'] * 1000:.0f} ms, "
        f"max {out['overhead_max'] * 1000:.0f} ms; launch -> started p50 {out['start_p50'] * 1000:.0f} ms, "
        f"max {out['start_max'] * 1000:.0f} ms"
    )
    return out


def measure_running(cluster: bc.Cluster, agent: str, n: int, idle_by_pid: dict) -> dict:
    from spawner.models import AgentRun, RunAttempt
    from spawner.states import RunStatus

    batch, _ = bc.launch(spec(f"memory-{agent}", agent, n, prompt="memory"))
    deadline = time.monotonic() + 60
    while AgentRun.objects.filter(batch=batch, status=RunStatus.RUNNING).count() < n and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # every call is streaming now (a memory answer streams for ~10 s)
    running = AgentRun.objects.filter(batch=batch, status=RunStatus.RUNNING).count()
    procs, agents = cluster.processes()
    worker_pids = set(RunAttempt.objects.filter(run__batch=batch).values_list("worker_pid", flat=True))
    busy = bc.memory([p for p in procs if p.pid in worker_pids])
    idle = bc.memory([idle_by_pid[pid] for pid in worker_pids if pid in idle_by_pid])
    own = bc.memory(agents) if agents else {"rss": 0.0, "pss": 0.0, "uss": 0.0, "n": 0}
    bc.wait(batch)
    keys = ("rss", "pss", "uss")
    worker_delta = {k: (busy[k] - idle[k]) / max(running, 1) for k in keys}
    agent_own = {k: own[k] / max(running, 1) for k in keys}
    total = {k: worker_delta[k] + agent_own[k] for k in keys}
    return {"running": running, "worker": worker_delta, "own": agent_own, "total": total, "procs": own["n"]}


def bench_memory(cluster: bc.Cluster, n: int) -> dict:
    header(f"2. memory: {n} concurrent model agents vs {n} CLI agents making the same call")
    time.sleep(0.5)
    idle_procs, _ = cluster.processes()
    idle_by_pid = {p.pid: p for p in idle_procs}
    model = measure_running(cluster, "model", n, idle_by_pid)
    idle_procs, _ = cluster.processes()
    idle_by_pid = {p.pid: p for p in idle_procs}
    cli = measure_running(cluster, "cli", n, idle_by_pid)
    rows = []
    for label, m in (("model agent (thread in its worker)", model), ("CLI agent (python3 process)", cli)):
        rows.append((f"{label}: added to its worker", *(f"{m['worker'][k]:+.2f}" for k in ("rss", "pss", "uss"))))
        rows.append(("  its own processes", *(f"{m['own'][k]:.2f}" for k in ("rss", "pss", "uss"))))
        rows.append(("  in all, per concurrent agent", *(f"{m['total'][k]:.2f}" for k in ("rss", "pss", "uss"))))
    print("   " + bc.table(rows, ("MiB per agent", "RSS", "PSS", "USS")).replace("\n", "\n   "))
    calls = in_process_calls(n)
    print(
        f"   running: {model['running']} model, {cli['running']} CLI agents (each also holds one pre-forked worker); "
        f"a warm worker's RSS does not move for a model call"
    )
    print(
        f"   {n} model calls streaming in one process (this one): USS {calls['uss'] * 1024:+.0f} KiB, "
        f"RSS {calls['rss'] * 1024:+.0f} KiB per call; a CLI agent's own process: PSS {cli['own']['pss']:.1f} MiB "
        f"= {cli['own']['pss'] / max(calls['uss'], 1e-3):.0f}x a model call"
    )
    return {"model": model, "cli": cli, "calls": calls}


def in_process_calls(n: int) -> dict:
    """What one more streaming model call costs a process that already made one: threads, buffers, sockets."""
    import tempfile

    import psutil

    from spawner.runners import Invocation, ModelCall, ModelRunner

    url = bc.STATE["server"].url + "/v1"
    folder = Path(tempfile.mkdtemp(dir=bc.STATE["tmp"]))

    def start(i: int):
        stem = folder / f"c{i}.1"
        inv = Invocation(
            (), f"memory {i}", "arg", f"c{i}", folder, Path(f"{stem}.log"), Path(f"{stem}.result.json"),
            Path(f"{stem}.prompt.txt"), model=ModelCall(base_url=url, model="scripted"),
        )  # fmt: skip
        return ModelRunner().start(inv)

    start(-1).stop(5)  # warm: imports, first connection
    me = psutil.Process()
    before = me.memory_full_info()
    calls = [start(i) for i in range(n)]
    time.sleep(1.0)
    during = me.memory_full_info()
    for c in calls:
        c.stop(5)
    return {"uss": (during.uss - before.uss) / 2**20 / n, "rss": (during.rss - before.rss) / 2**20 / n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=50, help="model agents at once (default 50)")
    p.add_argument("--workers", type=int, default=50, help="SPAWNER_WORKERS (default 50: one per agent)")
    p.add_argument("--tokens", type=int, default=100, help="tokens (words) in each answer (default 100)")
    p.add_argument("--delay", type=float, default=0.02, help="seconds between two streamed tokens (default 0.02)")
    p.add_argument("--only", default="12", help="which measurements to run, e.g. --only 1")
    args = p.parse_args()
    command = " ".join([".venv/bin/python", "bench/bench_models.py", *map(shlex.quote, sys.argv[1:])])
    machine = bc.machine()
    started = time.monotonic()
    env = bc.setup(workers=args.workers)
    from tests.support.model_server import ModelServer

    server = ModelServer().start()
    bc.STATE["server"] = server
    server.chat(" ".join(f"w{i}" for i in range(args.tokens)))
    server.chat(" ".join(f"m{i}" for i in range(int(10 / args.delay))), when="memory")
    server.token_delay = args.delay
    ideal = args.tokens * args.delay
    print(f"machine: {machine}")
    print(f"backend: {bc.describe_backend()}; {args.workers} q2 workers; scripted server {server.url}")
    print(f"command: {command}")
    from spawner.states import AgentKind

    bc.agent_type("model", [], kind=AgentKind.MODEL, base_url=server.url + "/v1", model="scripted")
    bc.agent_type("cli", [sys.executable, "-c", CLI_SCRIPT, server.url + "/v1", "{prompt}"])
    results: dict = {}
    cluster = bc.Cluster(env)
    try:
        ready = cluster.start()
        print(f"cluster pid {cluster.pid} ready after {ready:.2f} s")
        batch, wall = bc.run_batch(spec("warmup", "model", args.workers))
        print(f"warm-up: {args.workers} model agents in {wall:.2f} s ({batch.status})")
        if "1" in args.only:
            results["wall"] = bench_wall(args.agents, ideal)
            results["cli_wall"] = bench_wall(args.agents, ideal, "cli")
        if "2" in args.only:
            results["memory"] = bench_memory(cluster, args.agents)
    finally:
        cluster.stop()
        server.stop()
        bc.cleanup()
    rows = []
    if w := results.get("wall"):
        rows.append(
            (
                f"{args.agents} model agents, wall",
                f"{w['wall']:.2f} s",
                f"ideal {w['ideal']:.2f} s",
                f"{w['ratio']:.2f}x",
            )
        )
        rows.append(("  overhead per agent (p50)", bc.ms(w["overhead_p50"]), "", ""))
        rows.append(("  (wall - ideal) / agents", bc.ms(w["amortised"]), "", ""))
    if c := results.get("cli_wall"):
        label = f"{args.agents} CLI agents, the same call, wall"
        rows.append((label, f"{c['wall']:.2f} s", f"ideal {c['ideal']:.2f} s", f"{c['ratio']:.2f}x"))
        rows.append(("  overhead per agent (p50)", bc.ms(c["overhead_p50"]), "", ""))
    if m := results.get("memory"):
        call, cli = m["calls"]["uss"], m["cli"]["total"]
        rows.append(
            (
                "memory per concurrent agent (USS)",
                f"model {call * 1024:.0f} KiB",
                f"CLI {cli['uss']:.1f} MiB",
                f"{cli['uss'] / max(call, 1e-3):.0f}x less",
            )
        )
        rows.append(("  worker's RSS while a model agent runs", f"{m['model']['worker']['rss']:+.2f} MiB", "", ""))
    print("\n== summary")
    print(f"machine: {machine}")
    print(f"command: {command}  ({time.monotonic() - started:.0f} s)")
    print(bc.table(rows, ("measure", "spawner", "baseline", "ratio")))


if __name__ == "__main__":
    main()
