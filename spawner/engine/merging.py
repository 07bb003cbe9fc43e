"""The merge queue: each succeeded run's branch merged onto the batch's integration branch
(`spawner/<batch>/integration`, in its own worktree under the workspace root) in plan order, each
merge its own commit, the gate run on every result; a conflict or a failing gate waits for a person.

When a batch with `merge: sequential` or `manual` ends, `enter_queue` (inside the batch's
transaction) writes a step per run to merge and sends the `merge_queue` q2 task after the commit;
all git work happens there (`process`) or in a person's action (`by_hand`, `mark_resolved`, `revert`,
`reset`), never inside the batch's transaction. One file lock per workspace makes these take turns.
The user's own checkout and branches are never touched; nothing is pushed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from spawner.core import changes as changes_rules
from spawner.core import merge_queue as rules
from spawner.engine import events, git, queue, transitions, workspaces
from spawner.models import AgentRun, Aggregation, Batch, Escalation, MergeStep, RunAttempt, Workspace
from spawner.states import EventKind, RunStatus

log = logging.getLogger(__name__)
TASK = "spawner.engine.tasks.merge_queue"
STEP = MergeStep.State
LOCK_SECONDS = 600  # the queue task waits this long for a person's action (or another task) to finish
ACTION_LOCK_SECONDS = 30  # a person's action waits this long for the queue
FILE_MAX_BYTES = 1_000_000
_SPAWNER = {
    "GIT_AUTHOR_NAME": "Spawner",
    "GIT_AUTHOR_EMAIL": "spawner@spawner.invalid",
    "GIT_COMMITTER_NAME": "Spawner",
    "GIT_COMMITTER_EMAIL": "spawner@spawner.invalid",
}


class _GateTick:
    """The integration gate belongs to no attempt: nothing to heartbeat, it runs until its timeout."""

    def __call__(self) -> bool:
        return True

    def started(self, pgid: int) -> None:
        pass


class Busy(RuntimeError):
    """The merge queue is working on this batch; try again in a moment."""


class MergeError(RuntimeError):
    """A person's merge action could not be done; the message says why."""


def of(batch: Batch | int) -> Workspace | None:
    """The batch's workspace when it has a merge queue (worktrees, merge: sequential or manual)."""
    batch_id = batch if isinstance(batch, int) else batch.id
    return (
        Workspace.objects.filter(batch_id=batch_id, isolation=Workspace.Isolation.WORKTREE)
        .exclude(merge_mode=Workspace.MergeMode.NONE)
        .first()
    )


def integration_path(ws: Workspace) -> Path:
    return Path(ws.root) / "integration"


def log_dir(batch_id: int) -> Path:
    return Path(settings.SPAWNER["LOG_DIR"]) / f"batch-{batch_id}"


def merge_log(batch_id: int) -> Path:
    """The gate's output on the integration branch (each merge's run marked), beside the runs' logs."""
    return log_dir(batch_id) / "merge.log"


def integration_diff_path(batch_id: int) -> Path:
    return log_dir(batch_id) / "integration.diff"


# --- entering the queue (inside the batch's transaction) -----------------------------------


def enter_queue(batch: Batch) -> int:
    """The batch ended: each run to merge gets its step, re-runs that ended go back to the queue or
    to their conflict, and the queue task is sent after the commit. Returns the new steps."""
    ws = of(batch)
    if ws is None:
        return 0
    runs = list(AgentRun.objects.filter(batch_id=batch.id))
    by_key = {r.key: r for r in runs}
    order = rules.queue_order(rules.QueueRun(r.key, r.wave, r.priority, r.order) for r in runs)
    position = {key: i for i, key in enumerate(order)}
    succeeded = [k for k in order if by_key[k].status == RunStatus.SUCCEEDED]
    agg = Aggregation.objects.filter(batch_id=batch.id).values_list("data", flat=True).first() or {}
    start = STEP.WAITING if ws.merge_mode == Workspace.MergeMode.MANUAL else STEP.QUEUED
    created = 0
    for key in rules.to_merge(batch.aggregation or "", succeeded, agg.get("winner")):
        created += (
            transitions.merge_step_create(batch=batch, run=by_key[key], position=position[key], state=start) is not None
        )
    for step in MergeStep.objects.filter(batch_id=batch.id, state=STEP.RERUNNING).select_related("run"):
        run = step.run
        if run.attempt < (step.rerun_attempt or 0):
            continue
        if run.status == RunStatus.SUCCEEDED:
            transitions.merge_step_move(step, "merge_step_queued", STEP.QUEUED, data={"because": "re-run succeeded"})
        else:
            error = f"its re-run on the integration branch ended {run.status}: {run.error or 'no error text'}"
            _conflicted(ws, step, step.conflict or {}, error=error)
    send_on_commit(batch.id)
    return created


def send(batch_id: int) -> None:
    """Hand the batch's merge queue to a q2 worker now (through the outbox: a broker that is down
    gets it when it is back)."""
    queue.enqueue_merge(batch_id)


def send_on_commit(batch_id: int) -> None:
    """Hand the batch's merge queue to a q2 worker once the current transaction commits (the outbox)."""
    queue.enqueue_merge(batch_id)


def resend_stalled(now=None) -> int:
    """Queued steps nobody is merging: the queue task was lost with its worker, or arrived while the
    queue was busy and that run ended just before they were queued. Their batch's queue is sent again,
    once per lease (the steps' `updated_at` is pushed forward), and only when no one holds its lock."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.SPAWNER["LEASE_SECONDS"])
    stalled = MergeStep.objects.filter(state=STEP.QUEUED, updated_at__lt=now - lease)
    sent = 0
    for batch_id in set(stalled.values_list("batch_id", flat=True)):
        ws = of(batch_id)
        if ws is None or held(ws):
            continue
        MergeStep.objects.filter(batch_id=batch_id, state=STEP.QUEUED).update(updated_at=now)
        send(batch_id)
        sent += 1
    return sent


def held(ws: Workspace) -> bool:
    """Is someone merging in this batch's integration branch now (on this machine)?"""
    try:
        with locked(ws, wait=0):
            return False
    except Busy:
        return True


# --- the lock ------------------------------------------------------------------------------


@contextlib.contextmanager
def locked(ws: Workspace, wait: float = LOCK_SECONDS) -> Iterator[None]:
    """One git writer per integration branch at a time (the queue task, a person's action)."""
    root = Path(ws.root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".merge.lock", "a") as f:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Busy("the merge queue of this batch is busy; try again in a moment") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- git helpers ---------------------------------------------------------------------------


def integration_worktree(ws: Workspace) -> Path:
    """The integration branch's worktree, made from the checkpoint the first time."""
    path = integration_path(ws)
    repo = Path(ws.repo)
    if (path / ".git").exists():
        try:
            workspaces.verify_link(repo, path)
            return path
        except workspaces.WorkspaceError:  # not this repository's (a database started over): made anew
            shutil.rmtree(path, ignore_errors=True)
    branch = changes_rules.integration_branch(ws.batch_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with workspaces.repo_lock(repo):
        git.run(repo, "worktree", "prune", check=False)
        has = git.run(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False).returncode == 0
        if has:
            git.run(repo, "worktree", "add", "--force", str(path), branch)
        else:
            git.run(repo, "worktree", "add", "-b", branch, str(path), ws.checkpoint)
    return path


def merge_tree(repo: Path | str, ours: str, theirs: str) -> rules.MergeTree:
    done = git.run(repo, "merge-tree", "--write-tree", "--name-only", "-z", ours, theirs, check=False)
    if done.returncode not in (0, 1):
        raise git.GitError(["merge-tree", ours, theirs], done.returncode, done.stderr)
    return rules.parse_merge_tree(done.stdout)


def _head(path: Path | str, rev: str = "HEAD") -> str:
    return git.out(path, "rev-parse", "--verify", "--end-of-options", f"{rev}^{{commit}}")


def _branch_head(ws: Workspace, key: str) -> str | None:
    ref = f"refs/heads/{changes_rules.run_branch(ws.batch_id, key)}"
    done = git.run(ws.repo, "rev-parse", "--verify", "--quiet", ref, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def _is_ancestor(repo: Path | str, a: str, b: str) -> bool:
    return git.run(repo, "merge-base", "--is-ancestor", a, b, check=False).returncode == 0


def conflict_data(repo: Path | str, result: rules.MergeTree, *, ours: str, theirs: str) -> dict:
    """The conflicting files, their kinds and hunks (read from merge-tree's tree, which holds the markers)."""
    hunks = {}
    for path in result.files:
        shown = git.run(repo, "cat-file", "-p", f"{result.tree}:{path}", check=False)
        if (
            shown.returncode == 0
            and len(shown.stdout) <= FILE_MAX_BYTES
            and (found := rules.conflict_hunks(shown.stdout))
        ):
            hunks[path] = found
    return {
        "files": list(result.files),
        "kinds": rules.conflict_kinds(result),
        "hunks": hunks,
        "integration_head": ours,
        "run_head": theirs,
    }


def save_integration(ws: Workspace, path: Path) -> str:
    """Record the integration branch's head, its diff summary against the checkpoint and its diff text."""
    head = _head(path)
    numstat = git.out(path, "diff", "--numstat", "-z", "--no-renames", ws.checkpoint, head)
    summary = changes_rules.summarise(changes_rules.parse_numstat(numstat), [], base=ws.checkpoint, head=head)
    target = integration_diff_path(ws.batch_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    workspaces.write_diff(path, ws.checkpoint, head, target)
    Workspace.objects.filter(id=ws.id).update(integration_head=head, integration_changes=summary.as_data())
    ws.integration_head = head
    return head


# --- the pre-check -------------------------------------------------------------------------


def precheck(ws: Workspace, head: str) -> dict:
    """The conflict matrix: every pair of the queue's branches, and each branch not yet merged
    against the integration head, through `git merge-tree` (nothing is checked out)."""
    steps = list(MergeStep.objects.filter(batch_id=ws.batch_id).select_related("run").order_by("position"))
    heads = {s.run.key: h for s in steps if (h := _branch_head(ws, s.run.key))}
    keys = [s.run.key for s in steps if s.run.key in heads]
    old = ws.conflict_matrix or {}
    matrix = rules.Matrix(runs=keys)
    if old.get("heads") == heads:
        matrix.pairs = {(p["a"], p["b"]): p["files"] for p in old.get("pairs", [])}
        checked = old.get("checked_pairs", 0)
    else:
        for a, b in rules.pairs_of(keys):
            matrix.pairs[(a, b)] = list(merge_tree(ws.repo, heads[a], heads[b]).files)
        checked = len(matrix.pairs)
    for step in steps:
        key = step.run.key
        if key in heads and step.state not in (STEP.MERGED, STEP.SKIPPED):
            matrix.integration[key] = list(merge_tree(ws.repo, head, heads[key]).files)
    data = {**matrix.as_data(), "heads": heads, "integration_head": head}
    data["checked_pairs"] = max(checked, data["checked_pairs"])
    with transaction.atomic():
        Workspace.objects.filter(id=ws.id).update(conflict_matrix=data, matrix_at=timezone.now())
        events.record(
            batch_id=ws.batch_id,
            kind=EventKind.MERGE_MATRIX,
            data={"pairs": len(data["pairs"]), "against_integration": len(data["integration"])},
        )
    ws.conflict_matrix = data
    return data


# --- the queue task ------------------------------------------------------------------------


def process(batch_id: int) -> str:
    """Merge every queued step in order; what conflicts or fails its gate waits, the rest go on."""
    ws = of(batch_id)
    if ws is None:
        return "no merge queue"
    try:
        with locked(ws):
            path = integration_worktree(ws)
            _restore(ws, path)
            head = save_integration(ws, path)
            precheck(ws, head)
            done = []
            while step := _next(ws):
                done.append(f"{step.run.key}: {_merge_one(ws, path, step)}")
            save_integration(ws, path)
    except Busy as exc:
        return str(exc)
    return "; ".join(done) or "nothing queued"


def _restore(ws: Workspace, path: Path) -> None:
    """Back to the head last recorded: a queue task killed mid-merge or mid-gate leaves an unfinished
    merge, an ungated merge commit or the gate's leftovers, none of which may count as merged."""
    if not ws.integration_head:
        return
    git.run(path, "merge", "--abort", check=False)
    git.run(path, "revert", "--abort", check=False)
    if _head(path) != ws.integration_head or git.out(path, "status", "--porcelain"):
        git.run(path, "reset", "--hard", "-q", ws.integration_head)
        git.run(path, "clean", "-fdq")


def _next(ws: Workspace) -> MergeStep | None:
    return (
        MergeStep.objects.filter(batch_id=ws.batch_id, state=STEP.QUEUED)
        .select_related("run", "batch")
        .order_by("position")
        .first()
    )


def _message(step: MergeStep, how: str = "") -> str:
    run = step.run
    title = (run.prompt.strip().splitlines() or [""])[0][:60]
    return (
        f"Spawner: merge run {run.key} (batch {step.batch_id})\n\n{title}\n\nRun {run.key}, attempt {run.attempt}."
        + (f" {how}" if how else "")
    )


def _merge_one(ws: Workspace, path: Path, step: MergeStep) -> str:
    try:
        return _merge(ws, path, step)
    except (git.GitError, OSError) as exc:
        log.exception("merge step %s failed", step.id)
        git.run(path, "merge", "--abort", check=False)
        git.run(path, "reset", "--hard", "-q", check=False)
        with transaction.atomic():
            _conflicted(ws, step, step.conflict or {}, error=f"git failed: {exc}")
        return "failed"


def _merge(ws: Workspace, path: Path, step: MergeStep) -> str:
    key = step.run.key
    before = _head(path)
    theirs = _branch_head(ws, key)
    if theirs is None:
        with transaction.atomic():
            _conflicted(ws, step, {}, error=f"its branch {changes_rules.run_branch(ws.batch_id, key)} is gone")
        return "branch gone"
    again = bool(step.revert_commit) and _is_ancestor(path, step.revert_commit, before)
    if again:
        # Merged, then reverted: its commits are already on the branch, so a merge would add nothing.
        # Reverting the revert brings its work back, as a commit of its own.
        done = git.run(path, "revert", "--no-edit", step.revert_commit, env=_SPAWNER, check=False)
        if done.returncode != 0:
            files = git.out(path, "diff", "--name-only", "--diff-filter=U")
            git.run(path, "revert", "--abort", check=False)
            conflict = {"files": files.splitlines(), "kinds": {}, "hunks": {}}
            conflict.update(integration_head=before, run_head=theirs)
            with transaction.atomic():
                _conflicted(
                    ws, step, conflict, error="taking its reverted merge again conflicts with what was merged since"
                )
            return "conflict re-applying"
    elif _is_ancestor(path, theirs, before):
        with transaction.atomic():
            transitions.merge_step_move(
                step,
                "merge_step_merged",
                STEP.MERGED,
                merged_head=theirs,
                merge_commit="",
                merged_at=timezone.now(),
                error="",
                data={"commit": "", "note": "nothing new to merge"},
            )
        return "nothing new"
    result = merge_tree(path, before, theirs) if not again else rules.parse_merge_tree("")
    sides = (step.resolution or {}).get("sides") or {}
    if not again and not result.clean and set(result.files) - set(sides):
        conflict = conflict_data(path, result, ours=before, theirs=theirs)
        with transaction.atomic():
            _conflicted(ws, step, conflict)
        return f"conflict on {', '.join(result.files)}"
    if again:
        pass
    elif result.clean:
        git.run(path, "merge", "--no-ff", "--no-edit", "-m", _message(step), theirs, env=_SPAWNER)
    else:
        _merge_keeping_sides(path, step, theirs, sides)
    commit = _head(path)
    if ws.gate:
        code, tail = workspaces.run_step(
            "gate", f"{ws.gate}", path, merge_log(ws.batch_id), timeout=step.run.timeout, tick=_GateTick()
        )
        if code != 0:
            git.run(path, "reset", "--hard", "-q", before)
            with transaction.atomic():
                moved = transitions.merge_step_move(
                    step,
                    "merge_step_gate_failed",
                    STEP.GATE_FAILED,
                    error=f"gate failed (exit {code}) on the merge: {tail}"[-4000:],
                    conflict={**(step.conflict or {}), "gate": tail[-2000:]},
                    data={"exit_code": code},
                )
                if moved:
                    reason = f"run '{key}' merged onto {_branch(ws)} but the gate failed (exit {code}): {tail[-1500:]}"
                    transitions.escalation_open(
                        batch=step.batch, run=step.run, kind=Escalation.Kind.MERGE_GATE, reason=reason
                    )
            return f"gate failed ({code})"
    save_integration(ws, path)  # before the step says merged: a reader of both sees them agree
    with transaction.atomic():
        moved = transitions.merge_step_move(
            step,
            "merge_step_merged",
            STEP.MERGED,
            merge_commit=commit,
            merged_head=theirs,
            merged_at=timezone.now(),
            revert_commit="",
            error="",
            data={"commit": commit},
        )
    if not moved:  # a person skipped it while it was being merged: their decision stands
        git.run(path, "reset", "--hard", "-q", before)
        save_integration(ws, path)
        return "left out: skipped while it was being merged"
    return f"merged {commit[:10]}"


def _merge_keeping_sides(path: Path, step: MergeStep, theirs: str, sides: dict) -> None:
    """A merge whose conflicting files take the side a person chose (ours: integration, theirs: the run)."""
    git.run(path, "merge", "--no-ff", "--no-commit", theirs, env=_SPAWNER, check=False)
    unmerged = [p for p in git.out(path, "diff", "--name-only", "--diff-filter=U", "-z").split("\0") if p]
    for file in unmerged:
        side = sides[file]
        taken = git.run(path, "checkout", f"--{side}", "--", file, check=False)
        if taken.returncode == 0:
            git.run(path, "add", "--", file)
        else:  # that side deleted it
            git.run(path, "rm", "-q", "--", file)
    chosen = ", ".join(f"{f}: {s}" for f, s in sorted(sides.items()))
    git.run(
        path,
        "commit",
        "--no-verify",
        "-q",
        "-m",
        _message(step, f"Conflicts resolved by keeping {chosen}."),
        env=_SPAWNER,
    )


def _branch(ws: Workspace) -> str:
    return changes_rules.integration_branch(ws.batch_id)


def _conflicted(ws: Workspace, step: MergeStep, conflict: dict, *, error: str = "") -> None:
    """The step waits for a person (call inside a transaction): its conflict stored, an escalation opened."""
    files = conflict.get("files", [])
    error = error or f"conflicts with {_branch(ws)} on {', '.join(files)}"
    if not transitions.merge_step_move(
        step,
        "merge_step_conflicted",
        STEP.CONFLICT,
        conflict=conflict,
        resolution=None,
        error=error,
        data={"files": files[:50]},
    ):
        return
    reason = f"run '{step.run.key}' does not merge onto {_branch(ws)}: {error}"
    shown = 0
    for file, hunks in (conflict.get("hunks") or {}).items():
        for hunk in hunks:
            if shown >= 3:
                break
            reason += f"\n\n{file}, line {hunk['line']}:\n{hunk['text'][:1200]}"
            shown += 1
    transitions.escalation_open(batch=step.batch, run=step.run, kind=Escalation.Kind.CONFLICT, reason=reason)


# --- a person's actions that touch git (called by the services) -----------------------------


def run_worktree(ws: Workspace, run: AgentRun) -> Path:
    """The worktree of the run's current attempt, made again on its branch if it is gone."""
    attempt = RunAttempt.objects.filter(run=run, number=run.attempt).first()
    if attempt and attempt.worktree and (Path(attempt.worktree) / ".git").exists():
        try:
            workspaces.verify_link(ws.repo, Path(attempt.worktree))
        except workspaces.WorkspaceError as exc:
            raise MergeError(f"run '{run.key}': {exc}") from None
        return Path(attempt.worktree)
    path = Path(ws.root) / changes_rules.worktree_name(ws.batch_id, run.key, run.attempt)
    path.parent.mkdir(parents=True, exist_ok=True)
    with workspaces.repo_lock(ws.repo):
        git.run(ws.repo, "worktree", "prune", check=False)
        git.run(ws.repo, "worktree", "add", "--force", str(path), changes_rules.run_branch(ws.batch_id, run.key))
    if attempt:
        RunAttempt.objects.filter(id=attempt.id).update(worktree=str(path))
    return path


def by_hand(ws: Workspace, step: MergeStep) -> tuple[Path, list[str]]:
    """Put the conflict in the run's worktree (the integration branch merged in, markers left) for a
    person to edit. Returns the worktree and the files to resolve."""
    with locked(ws, ACTION_LOCK_SECONDS):
        path = run_worktree(ws, step.run)
        integration = integration_worktree(ws)
        head = _head(integration)
        if git.out(path, "status", "--porcelain"):
            raise MergeError(f"the run's worktree {path} has uncommitted changes; commit or discard them first")
        done = git.run(path, "merge", "--no-ff", "--no-commit", head, env=_SPAWNER, check=False)
        files = [p for p in git.out(path, "diff", "--name-only", "--diff-filter=U", "-z").split("\0") if p]
        if done.returncode != 0 and not files:
            git.run(path, "merge", "--abort", check=False)
            raise MergeError(f"could not merge {_branch(ws)} into the run's worktree: {done.stderr.strip()[-300:]}")
        return path, files


def mark_resolved(ws: Workspace, step: MergeStep, *, who: str) -> str:
    """Commit a person's resolution in the run's worktree (refused while conflict markers remain)."""
    with locked(ws, ACTION_LOCK_SECONDS):
        path = run_worktree(ws, step.run)
        unmerged = [p for p in git.out(path, "diff", "--name-only", "--diff-filter=U", "-z").split("\0") if p]
        files = set(unmerged) | set((step.conflict or {}).get("files", []))
        marked = []
        for file in sorted(files):
            target = path / file
            small = target.is_file() and target.stat().st_size <= FILE_MAX_BYTES
            if small and rules.has_markers(target.read_text(errors="replace")):
                marked.append(file)
        if marked:
            raise MergeError(f"conflict markers remain in {', '.join(marked)}")
        git.run(path, "add", "-A")
        env = {**_SPAWNER, "GIT_AUTHOR_NAME": who or "Spawner"}
        message = f"Spawner: {step.run.key} merged with {_branch(ws)}, resolved by hand by {who or 'a person'}"
        merging = git.run(path, "rev-parse", "-q", "--verify", "MERGE_HEAD", check=False).returncode == 0
        staged = git.run(path, "diff", "--cached", "--quiet", check=False).returncode != 0
        if merging or staged:
            git.run(path, "commit", "--no-verify", "-q", "-m", message, env=env)
        return _head(path)


def revert(ws: Workspace, step: MergeStep) -> str:
    """`git revert -m 1 <merge commit>` on the integration branch. Returns the revert commit."""
    with locked(ws, ACTION_LOCK_SECONDS):
        path = integration_worktree(ws)
        if not step.merge_commit:
            return ""
        done = git.run(path, "revert", "-m", "1", "--no-edit", step.merge_commit, env=_SPAWNER, check=False)
        if done.returncode != 0:
            files = git.out(path, "diff", "--name-only", "--diff-filter=U")
            git.run(path, "revert", "--abort", check=False)
            raise MergeError(
                f"reverting run '{step.run.key}' conflicts with what was merged after it"
                + (f" (files: {', '.join(files.split())})" if files else "")
                + ": revert those first, or reset the integration branch"
            )
        commit = _head(path)
        save_integration(ws, path)
        return commit


def reset(ws: Workspace) -> str:
    """The integration branch back to the checkpoint."""
    with locked(ws, ACTION_LOCK_SECONDS):
        path = integration_worktree(ws)
        git.run(path, "merge", "--abort", check=False)
        git.run(path, "reset", "--hard", "-q", ws.checkpoint)
        save_integration(ws, path)
        return ws.checkpoint
