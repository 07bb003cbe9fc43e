"""Git workspaces for coding agents: a checkpoint at launch, a worktree and branch per attempt,
setup before the agent, and after it a commit, a diff summary, a scope check and a gate.

The user's checkout is never touched: its HEAD, index and files stay as they were. Spawner
writes only refs of its own (`refs/spawner/<batch>/checkpoint`, branches `spawner/<batch>/...`)
and worktrees under its data directory. Nothing is ever pushed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from django.conf import settings

from spawner import spec
from spawner.core import changes as changes_rules
from spawner.engine import events, git
from spawner.models import AgentRun, Batch, RunAttempt, Workspace
from spawner.states import EventKind, RunStatus

DIFF_MAX_BYTES = 2_000_000


class Tick(Protocol):
    """The attempt's keeper while a step runs: `started` records the step's process group (so a
    reaper or a stopping cluster can stop it), calling it heartbeats and says whether to go on."""

    def __call__(self) -> bool: ...

    def started(self, pgid: int) -> None: ...


class WorkspaceError(RuntimeError):
    """The attempt cannot go on in its workspace; the message says why, for the run's error."""


def conf(name: str):
    return settings.SPAWNER[name]


def root_dir(batch_id: int) -> Path:
    return Path(conf("WORKSPACE_DIR")) / f"batch-{batch_id}"


# --- at launch -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    repo: Path
    commit: str
    snapshot: bool


def _field(field: str, message: str) -> spec.SpecInvalid:
    return spec.SpecInvalid([spec.FieldError("batch", f"workspace.{field}", message)])


def checkpoint(
    ws: spec.WorkspaceSpec, batch_cwd: Path, *, confine_to: Path | None = None, snapshot: bool = True
) -> Checkpoint:
    """The commit every run starts from. A dirty checkout is refused, or with `allow_dirty`
    snapshotted into a commit through a separate index: the user's index is not touched.
    Without `snapshot` (a check before launch) nothing is written."""
    where = (batch_cwd / ws.repo).resolve()
    name = ws.repo
    base = confine_to.resolve() if confine_to is not None else None
    if base is not None and not where.is_relative_to(base):
        raise _field("repo", f"{name!r} must stay inside the server's base directory")
    if not where.is_dir():
        raise _field("repo", f"{name!r} is not a directory")
    found = git.run(where, "rev-parse", "--is-bare-repository", "--show-toplevel", check=False)
    if found.returncode != 0 and "must be run in a work tree" in found.stderr:
        raise _field("repo", f"{name!r} is a bare repository: name a checkout (a repository with a work tree)")
    if found.returncode != 0:
        raise _field("repo", f"{name!r} is not inside a git repository")
    lines = found.stdout.split("\n")
    if lines[0].strip() == "true" or len(lines) < 2 or not lines[1].strip():
        raise _field("repo", f"{name!r} is a bare repository: name a checkout (a repository with a work tree)")
    repo = Path(lines[1].strip())
    if base is not None and not repo.resolve().is_relative_to(base):
        # The directory is inside the base, but the repository it belongs to is not.
        raise _field("repo", f"{name!r} belongs to a repository outside the server's base directory")
    if git.run(repo, "rev-parse", "--verify", "--quiet", "HEAD", check=False).returncode != 0 and ws.base == "HEAD":
        raise _field("repo", f"{name!r} has no commits yet: commit something first")
    resolved = git.run(
        repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ws.base}^{{commit}}", check=False
    )
    if resolved.returncode != 0:
        raise _field("base", f"{ws.base!r} is not a branch, tag or commit of the repository")
    commit = resolved.stdout.strip()
    dirty = git.out(repo, "status", "--porcelain", "--untracked-files=all")
    if not dirty:
        return Checkpoint(repo, commit, snapshot=False)
    count = len(dirty.splitlines())
    if not ws.allow_dirty:
        raise _field(
            "repo",
            f"the repository has {count} uncommitted change{'s' if count != 1 else ''}: commit or stash them, "
            "or set allow_dirty: true to start from a snapshot of them",
        )
    if ws.base != "HEAD":
        raise _field("allow_dirty", "a snapshot of uncommitted changes starts from HEAD: leave base out")
    if not snapshot:
        return Checkpoint(repo, commit, snapshot=True)
    try:
        return Checkpoint(repo, _snapshot(repo, commit), snapshot=True)
    except git.GitError as exc:
        raise _field("allow_dirty", f"could not snapshot the uncommitted changes: {exc.stderr[-300:]}") from None


def _snapshot(repo: Path, head: str) -> str:
    """A commit of the working tree as it is, made through a temporary index."""
    with tempfile.TemporaryDirectory(prefix="spawner-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), **_author("checkpoint", 0)}
        git.run(repo, "read-tree", head, env=env)
        git.run(repo, "add", "-A", env=env)
        tree = git.out(repo, "write-tree", env=env)
        return git.out(repo, "commit-tree", tree, "-p", head, "-m", "Spawner checkpoint: uncommitted changes", env=env)


def record(batch: Batch, ws: spec.WorkspaceSpec, cp: Checkpoint) -> Workspace:
    """Store the batch's workspace (inside the launch transaction) and pin its checkpoint."""
    try:
        git.run(cp.repo, "update-ref", changes_rules.checkpoint_ref(batch.id), cp.commit)
    except git.GitError as exc:
        raise _field("repo", f"could not record the checkpoint in the repository: {exc.stderr[-300:]}") from None
    return Workspace.objects.create(
        batch=batch,
        repo=str(cp.repo),
        isolation=ws.isolation,
        base=ws.base,
        checkpoint=cp.commit,
        snapshot=cp.snapshot,
        setup=ws.setup,
        gate=ws.gate,
        merge_mode=ws.merge,
        scope_policy=ws.scope,
        root=str(root_dir(batch.id)),
    )


def of(run: AgentRun) -> Workspace | None:
    """The run's isolated workspace, or None when it runs in its working directory."""
    ws = Workspace.objects.filter(batch_id=run.batch_id, isolation=Workspace.Isolation.WORKTREE).first()
    return ws


# --- an attempt's worktree -----------------------------------------------------------------


def _author(key: str, batch_id: int) -> dict[str, str]:
    name = f"Spawner run {key}" + (f" (batch {batch_id})" if batch_id else "")
    email = f"{key}@batch-{batch_id}.spawner.invalid"
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": "Spawner",
        "GIT_COMMITTER_EMAIL": "spawner@spawner.invalid",
    }


@contextlib.contextmanager
def repo_lock(repo: str | Path):
    """One change to a repository's list of worktrees at a time, across this machine's workers:
    git reads the other worktrees' records while it adds one, and a record half written by a
    concurrent `worktree add` makes it fail. Only the bookkeeping is serialised; checkouts are not."""
    locks = Path(conf("WORKSPACE_DIR")) / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha1(str(Path(repo).resolve()).encode()).hexdigest()[:16]
    with open(locks / f"{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_worktree(repo: str | Path, path: str | Path) -> None:
    """Remove a worktree and git's record of it; quietly, whatever state it is in."""
    path = Path(path)
    with repo_lock(repo):
        git.run(repo, "worktree", "remove", "--force", "--force", str(path), check=False)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        git.run(repo, "worktree", "prune", check=False)


def add_worktree(repo: str | Path, path: Path, branch: str, start: str) -> None:
    """`git worktree add -B branch path start`: the record under the repository's lock, the
    checkout of its files after it, side by side with other workers' checkouts."""
    with repo_lock(repo):
        git.run(repo, "worktree", "prune", check=False)  # a stale record would change the new one's name
        git.run(repo, "worktree", "add", "--force", "--no-checkout", "-B", branch, str(path), start)
    verify_link(repo, path)
    git.run(path, "reset", "--hard", "-q", "HEAD")


def _common_dir(repo: str | Path) -> Path:
    dot_git = Path(repo) / ".git"
    if dot_git.is_dir():
        return dot_git.resolve()
    return Path(git.out(repo, "rev-parse", "--path-format=absolute", "--git-common-dir")).resolve()


def verify_link(repo: str | Path, path: Path) -> None:
    """A worktree's `.git` file says which repository git works on. The agent can edit it (it is
    in its directory): pointed elsewhere, Spawner's own `git add`/`commit` there would run that
    repository's configured commands or commit onto the user's branch. So before git touches a
    run's worktree, the link must be exactly the one `git worktree add` wrote."""
    link = Path(path) / ".git"
    expected = f"gitdir: {_common_dir(repo) / 'worktrees' / Path(path).name}"
    try:
        if link.is_symlink() or not link.is_file():
            raise WorkspaceError("its worktree's .git file was replaced: Spawner will not run git there")
        content = link.read_text(errors="replace").strip()
    except OSError:
        raise WorkspaceError("its worktree's .git file cannot be read: Spawner will not run git there") from None
    if content != expected:
        raise WorkspaceError("its worktree's .git file was changed: Spawner will not run git there")


def prepare(attempt: RunAttempt, ws: Workspace, log_path: Path, tick: Tick) -> Path:
    """A fresh worktree for this attempt on the run's branch: the checkpoint plus what its
    dependencies committed, then the batch's setup command. Returns the agent's directory."""
    run = attempt.run
    repo = Path(ws.repo)
    for old in RunAttempt.objects.filter(run_id=run.id).exclude(id=attempt.id).exclude(worktree=""):
        remove_worktree(repo, old.worktree)  # a retry starts from a fresh worktree
        RunAttempt.objects.filter(id=old.id).update(worktree="")
    path = Path(ws.root) / changes_rules.worktree_name(run.batch_id, run.key, attempt.number)
    if path.exists():
        remove_worktree(repo, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    branch = changes_rules.run_branch(run.batch_id, run.key)
    start = attempt.start_commit or ws.checkpoint  # a re-run on top starts from the integration branch
    # Recorded first: if this worker dies while git works, the next attempt finds it and removes it.
    RunAttempt.objects.filter(id=attempt.id).update(worktree=str(path), branch=branch)
    try:
        add_worktree(repo, path, branch, start)
    except git.GitError as exc:
        raise WorkspaceError(f"could not create its worktree: {exc.stderr[-300:]}") from None
    taken = 0 if attempt.start_commit else _take_dependencies(run, path)
    base = git.out(path, "rev-parse", "HEAD") if taken or not _is_sha(start) else start
    RunAttempt.objects.filter(id=attempt.id).update(base_commit=base)
    if ws.setup:
        code, tail = run_step("setup", ws.setup, path, log_path, timeout=run.timeout, tick=tick)
        if code != 0:
            raise WorkspaceError(f"setup failed (exit {code}): {tail}")
    return _agent_dir(run, ws, path)


def _agent_dir(run: AgentRun, ws: Workspace, worktree: Path) -> Path:
    """The task's cwd, moved from the repository into the worktree (the top when outside it)."""
    with contextlib.suppress(ValueError):
        inside = Path(run.cwd).resolve().relative_to(Path(ws.repo))
        if (worktree / inside).is_dir():
            return worktree / inside
    return worktree


def _is_sha(rev: str) -> bool:
    return len(rev) == 40 and all(c in "0123456789abcdef" for c in rev)


def _take_dependencies(run: AgentRun, path: Path) -> int:
    """Merge what each succeeded dependency committed, so a later wave builds on the earlier ones.
    Returns how many were merged."""
    if not run.depends_on:
        return 0
    heads = (
        RunAttempt.objects.filter(
            run__batch_id=run.batch_id, run__key__in=run.depends_on, run__status=RunStatus.SUCCEEDED
        )
        .exclude(head_commit="")
        .order_by("run__order", "-number")
        .values_list("run__key", "head_commit", "number", "run__attempt")
    )
    taken = set()
    env = _author(run.key, run.batch_id)
    for key, head, number, current in heads:
        if key in taken or number != current:
            continue
        taken.add(key)
        merged = git.run(
            path, "merge", "--no-ff", "--no-edit", "-m", f"Spawner: take the work of {key}", head, env=env, check=False
        )
        if merged.returncode != 0:
            files = git.out(path, "diff", "--name-only", "--diff-filter=U")
            git.run(path, "merge", "--abort", check=False)
            raise WorkspaceError(
                f"the work of its dependency {key!r} does not merge onto the others'"
                + (f" (conflicting files: {', '.join(files.splitlines()[:5])})" if files else "")
            )
    return len(taken)


# --- after the agent -----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the workspace says about an attempt the agent itself ended."""

    ok: bool
    error: str = ""
    escalation: str = ""  # a reason to escalate (scope) although the run succeeded


def conclude(attempt: RunAttempt, ws: Workspace, log_path: Path, *, agent_ok: bool, tick: Tick) -> Outcome:
    """Commit what the agent changed on its branch, summarise the diff, check the scope, run the gate."""
    run = attempt.run
    row = RunAttempt.objects.values("worktree", "base_commit").get(id=attempt.id)
    path, base = Path(row["worktree"]), row["base_commit"]
    if not row["worktree"] or not path.is_dir():
        return Outcome(ok=False, error="its worktree is gone")
    try:
        verify_link(ws.repo, path)
    except WorkspaceError as exc:
        return Outcome(ok=False, error=str(exc))
    env = _author(run.key, run.batch_id)
    git.run(path, "add", "-A", env=env)
    title = (run.prompt.strip().splitlines() or [""])[0][:72]
    message = f"{run.key}: {title}\n\nSpawner batch {run.batch_id}, run {run.key}, attempt {attempt.number}."
    # Exit 1 with nothing staged: the agent changed nothing (the head stays where it started).
    committed = git.run(path, "commit", "--no-verify", "-q", "-m", message, env=env, check=False)
    if committed.returncode not in (0, 1):
        raise git.GitError(["commit"], committed.returncode, committed.stderr)
    head = git.out(path, "rev-parse", "HEAD")
    if head == base:
        summary = changes_rules.summarise([], run.files, base=base, head=head)
        diff_path(log_path).write_bytes(b"")
    else:
        numstat = git.out(path, "diff", "--numstat", "-z", "--no-renames", base, head)
        summary = changes_rules.summarise(changes_rules.parse_numstat(numstat), run.files, base=base, head=head)
        write_diff(path, base, head, diff_path(log_path))
    data = summary.as_data()
    RunAttempt.objects.filter(id=attempt.id).update(head_commit=head, changes=data)
    AgentRun.objects.filter(id=run.id, attempt=attempt.number).update(changes=data)
    events.record(
        batch_id=run.batch_id,
        run_id=run.id,
        attempt=attempt.number,
        kind=EventKind.RUN_CHANGES,
        data={k: data[k] for k in ("added", "removed", "changed", "outside_scope")},
    )
    if not agent_ok:
        return Outcome(ok=False)
    verdict = changes_rules.scope_verdict(summary, ws.scope_policy)
    if verdict.fail:
        return Outcome(ok=False, error=verdict.message)
    if ws.gate:
        code, tail = run_step("gate", ws.gate, path, log_path, timeout=run.timeout, tick=tick)
        events.record(
            batch_id=run.batch_id,
            run_id=run.id,
            attempt=attempt.number,
            kind=EventKind.RUN_GATE,
            data={"exit_code": code},
        )
        if code != 0:
            return Outcome(ok=False, error=f"gate failed (exit {code}): {tail}")
    return Outcome(ok=True, escalation=verdict.message if verdict.escalate else "")


def diff_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name.removesuffix(".log") + ".diff")


def write_diff(path: Path, base: str, head: str, target: Path) -> None:
    """The unified diff beside the log, bounded: the page reads it without needing the repository.

    Written beside the target, then renamed over it: a page reading it meanwhile (a live update
    while the integration branch's diff is recorded again) sees the old diff or the new, never a
    file cut short."""
    argv = ["git", "diff", "--no-color", "--no-renames", "--no-ext-diff", base, head]
    partial = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.partial")
    try:
        _write_diff(argv, path, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _write_diff(argv: list[str], path: Path, target: Path) -> None:
    with (
        open(target, "wb") as out,
        subprocess.Popen(
            argv, cwd=path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "LC_ALL": "C"}
        ) as proc,
    ):
        written = 0
        assert proc.stdout is not None
        while chunk := proc.stdout.read(65536):
            room = DIFF_MAX_BYTES - written
            out.write(chunk[:room])
            written += min(len(chunk), room)
            if written >= DIFF_MAX_BYTES:
                out.write(f"\n[diff cut at {DIFF_MAX_BYTES} bytes]\n".encode())
                proc.kill()
                break


# --- setup and gate commands ---------------------------------------------------------------

MARK = "── spawner {step}: {command} ──\n"
TAIL_CHARS = 1500


def run_step(step: str, command: str, cwd: Path, log_path: Path, *, timeout: float, tick: Tick) -> tuple[int, str]:
    """Run an admin's setup or gate command in the worktree, its output marked in the run's log.

    Returns (exit code, the last lines of its output). It runs in its own process group:
    a timeout or a cancel (tick returning False) stops all it started.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(MARK.format(step=step, command=command.splitlines()[0][:200]).encode())
        start = log.tell()
        log.flush()
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # SPAWNER_ATTEMPT_LOG names the attempt, so a reaper can tell this group is still its own.
            env={
                **{k: v for k, v in os.environ.items() if k in conf("ENV_ALLOWLIST")},
                "SPAWNER_ATTEMPT_LOG": str(log_path),
            },
        )
        tick.started(proc.pid)
        deadline = time.monotonic() + timeout
        code: int | None = None
        while code is None:
            try:
                code = proc.wait(timeout=conf("POLL_SECONDS"))
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline or not tick():
                    _stop(proc)
                    code = proc.wait()
                    log.write(f"\n── spawner {step}: stopped ──\n".encode())
                    return (code if code else -1), f"{step} stopped (timeout or cancel)"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # what it left running in the background
        log.flush()
        with open(log_path, "rb") as f:  # the step's own output, before the closing mark
            f.seek(max(start, f.seek(0, 2) - TAIL_CHARS))
            tail = f.read().decode("utf-8", "replace").strip() or "(no output)"
        log.write(f"── spawner {step}: exit {code} ──\n".encode())
    return code, tail


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=conf("KILL_GRACE_SECONDS"))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
