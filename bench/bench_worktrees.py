"""Worktree isolation benchmarks (issue 9, section Tests and benchmarks).

    .venv/bin/python bench/bench_worktrees.py            # about a minute on the 2-core machine
    .venv/bin/python bench/bench_worktrees.py --files 2000 --only a

Everything runs in a temp dir: a throwaway git repository of `--files` files (10,000 by
default) with one commit, a throwaway SQLite database, and for (b) a real
`manage.py spawner_cluster` on it. It prints figures and ratios; it asserts nothing.

  a. Creating 16 worktrees the way Spawner does (`spawner.engine.workspaces.prepare` for 16
     launched attempts, called from 16 threads at once, as 16 cluster workers would: `git
     worktree add --force -B <branch> <path> <checkpoint>` plus the rows it writes), against
     plain `git worktree add` run one after the other in the same script. Wall time, time per
     worktree, and disk per worktree: `du` of the worktree's files plus its private git data
     (`.git/worktrees/<name>`: its index); the object store is shared and counted once, apart.
     Also the time to conclude (commit, diff summary) and to remove them.
  b. A whole 16-agent batch of agents that sleep 1 s then each write one file, through the
     cluster with `workspace: {isolation: worktree}` on that repository, against the same batch
     without a workspace (its agents write in a scratch directory): the wall time isolation
     adds (goal: under 1 s at 16-way). Alternated, median of `--repeats`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as bc  # noqa: E402

N = 16


def header(title: str) -> None:
    print(f"\n== {title}", flush=True)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def make_repo(path: Path, files: int) -> tuple[Path, float]:
    """A repository of `files` small text files in directories of 100, one commit."""
    t0 = time.perf_counter()
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "bench@example.com")
    git(path, "config", "user.name", "Bench")
    for i in range(files):
        d = path / "src" / f"pkg{i // 100:03d}"
        if i % 100 == 0:
            d.mkdir(parents=True)
        (d / f"mod{i % 100:02d}.py").write_text(f'"""Module {i}."""\n\n\ndef f{i}(x):\n    return x + {i}\n')
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path, time.perf_counter() - t0


def du(*paths: Path) -> int:
    """Bytes on disk (allocated blocks) of these paths, as `du -s` counts them."""
    existing = [str(p) for p in paths if p.exists()]
    if not existing:
        return 0
    out = subprocess.run(["du", "-s", "-B1", "-c", *existing], check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1].split()[0])


def private_git_dir(worktree: Path) -> Path:
    """`.git/worktrees/<name>` of a linked worktree: its HEAD, index and logs."""
    return Path(git(worktree, "rev-parse", "--absolute-git-dir"))


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


# --- a. creating worktrees -----------------------------------------------------------------------


def plain_sequential(repo: Path, commit: str, root: Path) -> dict:
    """The baseline: `git worktree add -b` sixteen times, one after the other."""
    times = []
    t0 = time.perf_counter()
    for i in range(N):
        s = time.perf_counter()
        git(repo, "worktree", "add", "-q", "-b", f"plain/{i}", str(root / f"plain-{i}"), commit)
        times.append(time.perf_counter() - s)
    wall = time.perf_counter() - t0
    paths = [root / f"plain-{i}" for i in range(N)]
    disk = [du(p) for p in paths]
    private = [du(private_git_dir(p)) for p in paths]
    t0 = time.perf_counter()
    for p in paths:
        git(repo, "worktree", "remove", "--force", str(p))
    removed = time.perf_counter() - t0
    return {"wall": wall, "each": times, "disk": disk, "private": private, "remove": removed}


class Tick:
    """Stands in for the worker's keeper: nothing to heartbeat here, never cancelled."""

    def __call__(self) -> bool:
        return True

    def started(self, pgid: int) -> None:
        pass


def spawner_concurrent(repo: Path, files: int) -> dict:
    """Sixteen launched attempts prepared at once from 16 threads through the engine's functions."""
    from django.db import connections

    from spawner import services
    from spawner.engine import workspaces
    from spawner.models import RunAttempt, Workspace

    batch, _ = bc.launch(batch_spec("prepare", repo, isolated=True))
    ws = Workspace.objects.get(batch=batch)
    attempts = list(RunAttempt.objects.select_related("run", "run__batch").filter(run__batch=batch))
    logs = bc.STATE["tmp"] / "logs"
    logs.mkdir(exist_ok=True)
    barrier = threading.Barrier(N)
    times: dict[int, float] = {}
    concluded: dict[int, float] = {}

    failed: list[str] = []

    def one(attempt) -> Path | None:
        try:
            barrier.wait()
            s = time.perf_counter()
            path = workspaces.prepare(attempt, ws, logs / f"{attempt.run.key}.log", Tick())
            times[attempt.id] = time.perf_counter() - s
            return path
        except workspaces.WorkspaceError as exc:
            failed.append(f"{attempt.run.key}: {exc}")
            return None
        finally:
            connections.close_all()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(N) as pool:
        paths = list(pool.map(one, attempts))
    wall = time.perf_counter() - t0
    if failed:
        print(f"   {len(failed)} of {N} worktrees could not be made, e.g. {failed[0][:300]}")
    attempts = [a for a, p in zip(attempts, paths, strict=True) if p is not None]
    paths = [p for p in paths if p is not None]
    disk = [du(p) for p in paths]
    private = [du(private_git_dir(p)) for p in paths]

    # One changed file per worktree, then conclude (commit, numstat, diff) from 16 threads.
    def finish(pair) -> None:
        attempt, path = pair
        try:
            (path / "src" / "pkg000" / "mod00.py").write_text(f"changed by {attempt.run.key}\n")
            attempt.refresh_from_db()
            s = time.perf_counter()
            workspaces.conclude(attempt, ws, logs / f"{attempt.run.key}.log", agent_ok=True, tick=Tick())
            concluded[attempt.id] = time.perf_counter() - s
        finally:
            connections.close_all()

    t1 = time.perf_counter()
    with ThreadPoolExecutor(N) as pool:
        list(pool.map(finish, zip(attempts, paths, strict=True)))
    conclude_wall = time.perf_counter() - t1
    services.batch_cancel(batch=batch)  # its queued messages must not run when (b) starts a cluster
    t2 = time.perf_counter()
    with ThreadPoolExecutor(N) as pool:
        list(pool.map(lambda p: workspaces.remove_worktree(repo, p), paths))
    removed = time.perf_counter() - t2
    left = len(git(repo, "worktree", "list", "--porcelain").split("worktree ")) - 2
    return {
        "wall": wall,
        "each": list(times.values()),
        "disk": disk,
        "private": private,
        "conclude_wall": conclude_wall,
        "conclude_each": list(concluded.values()),
        "remove": removed,
        "left": left,
    }


def bench_create(repo: Path, files: int) -> dict:
    header(f"a. {N} worktrees of a {files:,}-file repository")
    commit = git(repo, "rev-parse", "HEAD")
    root = bc.STATE["tmp"] / "plain"
    root.mkdir()
    plain = plain_sequential(repo, commit, root)
    spawner = spawner_concurrent(repo, files)
    objects = du(repo / ".git" / "objects")
    checkout = du(*[p for p in repo.iterdir() if p.name != ".git"])
    for name, r in (("plain `git worktree add`, sequential", plain), (f"Spawner prepare(), {N} threads", spawner)):
        print(
            f"   {name}: wall {r['wall']:.3f} s; per worktree p50 {bc.ms(bc.pct(r['each'], 50))}, "
            f"max {bc.ms(max(r['each'], default=float('nan')))}; disk per worktree {mib(bc.mean(r['disk']))} of files "
            f"+ {mib(bc.mean(r['private']))} private git data (index); removing all {r['remove']:.3f} s"
        )
    print(
        f"   ratio Spawner concurrent / plain sequential wall: {spawner['wall'] / plain['wall']:.2f}; "
        f"per-worktree time {bc.pct(spawner['each'], 50) / bc.pct(plain['each'], 50):.2f}x "
        f"(16 at once on {os.cpu_count()} cores)"
    )
    print(
        f"   conclude (git add -A, commit, numstat, diff of one changed file), {N} threads: "
        f"wall {spawner['conclude_wall']:.3f} s, p50 {bc.ms(bc.pct(spawner['conclude_each'], 50))} each"
    )
    print(
        f"   shared, counted once: object store {mib(objects)}; the repository's own checkout {mib(checkout)}; "
        f"worktrees left after removal: {spawner['left']}"
    )
    return {"plain": plain, "spawner": spawner, "objects": objects, "checkout": checkout}


# --- b. a whole batch with and without isolation ----------------------------------------------


def batch_spec(name: str, repo: Path, *, isolated: bool, seconds: float = 1.0) -> dict:
    data = {
        "name": name,
        "agent": "edit",
        "max_parallel": N,
        "tasks": [{"key": f"t{i:02d}", "prompt": f"{seconds:g}"} for i in range(N)],
    }
    if isolated:
        data["workspace"] = {"repo": str(repo), "isolation": "worktree", "merge": "none"}
    else:  # the same edits, in a scratch directory: the repository stays clean for the next batch
        data["cwd"] = "scratch"
    return data


def bench_batch(repo: Path, repeats: int, seconds: float) -> dict:
    from spawner.models import RunAttempt

    header(f"b. a {N}-agent batch (sleep {seconds:g} s, then edit one file), with and without worktrees")
    walls: dict[bool, list[float]] = {True: [], False: []}
    held: dict[bool, list[float]] = {True: [], False: []}
    for i in range(repeats):
        for isolated in (False, True) if i % 2 == 0 else (True, False):
            batch, wall = bc.run_batch(batch_spec(f"{'iso' if isolated else 'plain'}-{i}", repo, isolated=isolated))
            walls[isolated].append(wall)
            rows = RunAttempt.objects.filter(run__batch=batch).values_list("started_at", "finished_at")
            held[isolated] += [(f - s).total_seconds() - seconds for s, f in rows if s and f]
            print(
                f"   run {i + 1} {'with' if isolated else 'without'} worktrees: {wall:.3f} s ({batch.status})",
                flush=True,
            )
            for key, error in batch.runs.exclude(status="succeeded").values_list("key", "error")[:3]:
                print(f"      {key}: {error[:300]!r}")
    out = {
        "iso": bc.pct(walls[True], 50),
        "plain": bc.pct(walls[False], 50),
        "iso_held": bc.pct(held[True], 50),
        "plain_held": bc.pct(held[False], 50),
    }
    out["added"] = out["iso"] - out["plain"]
    print(
        f"   median wall: with worktrees {out['iso']:.3f} s, without {out['plain']:.3f} s: "
        f"isolation adds {out['added']:.3f} s at {N}-way (goal < 1 s), ratio {out['iso'] / out['plain']:.3f}"
    )
    print(
        f"   each attempt's hold beyond the sleep (claim -> recorded end), p50: with worktrees "
        f"{bc.ms(out['iso_held'])} (prepare + conclude), without {bc.ms(out['plain_held'])}"
    )
    return out


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=10_000, help="files in the throwaway repository (default 10,000)")
    p.add_argument("--repeats", type=int, default=3, help="batches of each kind in (b) (default 3)")
    p.add_argument("--sleep", type=float, default=1.0, help="seconds each agent of (b) sleeps (default 1)")
    p.add_argument("--workers", type=int, default=20, help="SPAWNER_WORKERS for the cluster (default 20)")
    p.add_argument("--only", default="ab", help="which measurements to run, e.g. --only a")
    args = p.parse_args()
    tmpdir = [f"TMPDIR={shlex.quote(os.environ['TMPDIR'])}"] if os.environ.get("TMPDIR") else []
    command = " ".join([*tmpdir, ".venv/bin/python", "bench/bench_worktrees.py", *map(shlex.quote, sys.argv[1:])])
    machine = bc.machine()
    started = time.monotonic()
    env = bc.setup(workers=args.workers)
    print(f"machine: {machine}")
    print(f"backend: {bc.describe_backend()}; {args.workers} q2 workers; {git(Path.cwd(), '--version')}")
    print(f"command: {command}")
    bc.agent_type("sleep", ["sleep", "{prompt}"])
    # (b)'s agent sleeps, then changes one file, as a coding agent would: with worktrees that is
    # one commit and one diff per run.
    bc.agent_type("edit", ["sh", "-c", 'sleep "$0"; echo "edited by $1" >> "edited-$1.txt"', "{prompt}", "{key}"])
    (bc.STATE["tmp"] / "scratch").mkdir(exist_ok=True)
    repo, made = make_repo(bc.STATE["tmp"] / "repo", args.files)
    fs = subprocess.run(["df", "--output=fstype", str(repo)], capture_output=True, text=True).stdout.split()[-1:]
    print(f"throwaway repository: {args.files:,} files, one commit, made in {made:.1f} s, on {''.join(fs)} ({repo})")
    results = {}
    try:
        if "a" in args.only:
            results["a"] = bench_create(repo, args.files)
        if "b" in args.only:
            with bc.Cluster(env) as cluster:
                print(f"\ncluster pid {cluster.pid} ready after {cluster.ready_seconds:.2f} s")
                batch, wall = bc.run_batch(batch_spec("warmup", repo, isolated=False, seconds=0.3))
                print(f"warm-up: {N} x `sleep 0.3` in {wall:.3f} s ({batch.status})")
                results["b"] = bench_batch(repo, args.repeats, args.sleep)
    finally:
        bc.cleanup()
    summary(results, args.files, command, time.monotonic() - started)


def summary(r: dict, files: int, command: str, seconds: float) -> None:
    header(f"summary ({seconds:.0f} s; {command})")
    if a := r.get("a"):
        plain, sp = a["plain"], a["spawner"]
        sp_disk = bc.mean(sp["disk"]) + bc.mean(sp["private"])
        plain_disk = bc.mean(plain["disk"]) + bc.mean(plain["private"])
        print(
            f"   {N} worktrees, {files:,} files: Spawner concurrent {sp['wall']:.2f} s vs plain sequential "
            f"{plain['wall']:.2f} s (ratio {sp['wall'] / plain['wall']:.2f}); per worktree "
            f"{bc.ms(bc.pct(sp['each'], 50))} vs {bc.ms(bc.pct(plain['each'], 50))}; disk per worktree "
            f"{mib(sp_disk)} vs {mib(plain_disk)} "
            f"(objects {mib(a['objects'])}, shared)"
        )
    if b := r.get("b"):
        print(
            f"   {N}-agent batch: isolation adds {b['added']:.3f} s ({b['iso']:.3f} vs {b['plain']:.3f} s; goal < 1 s)"
        )


if __name__ == "__main__":
    main()
