"""Housekeeping: remove the worktrees nobody needs any more, and measure the disk worktrees use.

A worktree goes once its batch has ended and its run's work is:
- merged: its head is on the batch's integration branch (or its merge step says merged);
- discarded: its run was cancelled, its branch was deleted, or its merge step was skipped;
- superseded: a later attempt of the same run exists (a retry starts from a fresh worktree);
- (the merge queue's integration worktree) no merge step needs it any more;
- expired: the batch ended longer ago than the retention period (SPAWNER_WORKTREE_RETENTION_HOURS).
Directories under SPAWNER_WORKSPACE_DIR of batches that no longer exist go too (orphans).

A run's branch is its work: it stays while the batch is within the retention period (a person may
reset the integration branch and merge again). Past it, a run branch whose work is on the
integration branch (merged) or whose run was cancelled or its merge step skipped (discarded) is
deleted, and its last commit printed so it can be brought back (`git branch NAME COMMIT`); a branch
nobody merged or discarded stays, and so does the integration branch. Only worktrees on this host
are touched, and never those of a batch still running.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connections
from django.utils import timezone

from spawner.core import changes as changes_rules
from spawner.core import merge_queue as merge_rules
from spawner.core.words import plural
from spawner.engine import git, lifecycle, merging, workspaces
from spawner.models import AgentRun, Batch, MergeStep, RunAttempt, Workspace
from spawner.states import BATCH_TERMINAL, RunStatus

log = logging.getLogger(__name__)

BATCH_DIR = re.compile(r"^batch-(\d+)$")


# --- disk ----------------------------------------------------------------------------------------


def _du(paths: Iterable[Path], timeout: float | None = None) -> int | None:
    """Bytes on disk (allocated blocks) of these paths, hard links counted once, as `du -s` does.
    With a `timeout`: None when `du` takes longer (a page does not wait for a slow disk)."""
    existing = [str(p) for p in paths if p.exists()]
    if not existing:
        return 0
    try:
        done = subprocess.run(
            ["du", "-s", "-c", "-B1", "--", *existing],
            capture_output=True,
            text=True,
            timeout=timeout or 120,
            check=False,
        )
        return int(done.stdout.strip().splitlines()[-1].split()[0])
    except subprocess.TimeoutExpired:
        return None if timeout else sum(_walk_size(Path(p)) for p in existing)
    except (OSError, ValueError, IndexError):
        return sum(_walk_size(Path(p)) for p in existing)


def _walk_size(path: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):
        if path.is_symlink() or path.is_file():
            return path.lstat().st_blocks * 512
        for entry in path.rglob("*"):
            with contextlib.suppress(OSError):
                total += entry.lstat().st_blocks * 512
    return total


def private_git_dir(worktree: Path) -> Path | None:
    """A linked worktree's own git data (`<repo>/.git/worktrees/<name>`: HEAD, index, logs), read
    from its `.git` file; the object store is the repository's, shared, and not counted."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = (worktree / ".git").read_text().strip()
        if text.startswith("gitdir:"):
            found = Path(text.split(":", 1)[1].strip())
            return found if found.is_absolute() else (worktree / found).resolve()
    return None


def worktrees_disk(paths: Iterable[str | Path], timeout: float | None = None) -> int | None:
    """The disk these worktrees use: their files plus their private git data, in bytes (None: not
    measured within `timeout`)."""
    counted: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            counted.append(path)
            if (private := private_git_dir(path)) is not None:
                counted.append(private)
    return _du(counted, timeout)


# --- what may go ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Removal:
    path: str
    reason: str  # merged | discarded | superseded | expired | orphan
    batch_id: int | None = None
    key: str = ""
    attempt: int | None = None
    repo: str = ""
    bytes: int = 0


@dataclass(frozen=True)
class BranchRemoval:
    repo: str
    branch: str
    commit: str  # where it pointed: `git branch <branch> <commit>` brings it back
    reason: str  # merged | discarded
    batch_id: int
    run_id: int = 0


@dataclass
class Report:
    removed: list[Removal] = field(default_factory=list)
    branches: list[BranchRemoval] = field(default_factory=list)
    kept: int = 0  # worktrees of ended batches that stay (work not merged yet, within retention)
    dry_run: bool = False

    @property
    def freed(self) -> int:
        return sum(r.bytes for r in self.removed)


def _merge_states(run_ids: list[int]) -> dict[int, str]:
    """The merge queue's word on each run (a batch with `merge: none` has no steps)."""
    return dict(MergeStep.objects.filter(run_id__in=run_ids).values_list("run_id", "state"))


# Merge steps that still need the integration branch's worktree (a person or the queue acts on it).
QUEUE_BUSY = frozenset(
    {merge_rules.QUEUED, merge_rules.WAITING, merge_rules.CONFLICT, merge_rules.RESOLVING, merge_rules.RERUNNING}
)


def _branch_head(repo: str, branch: str) -> str:
    found = git.run(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False)
    return found.stdout.strip() if found.returncode == 0 else ""


def _is_ancestor(repo: str, commit: str, of: str) -> bool:
    return git.run(repo, "merge-base", "--is-ancestor", commit, of, check=False).returncode == 0


def _reason(
    attempt: RunAttempt, *, expired: bool, merge_state: str | None, repo: str, integration: Callable[[], str]
) -> str | None:
    run = attempt.run
    if attempt.number != run.attempt:
        return "superseded"
    if merge_state == merge_rules.MERGED:
        return "merged"
    if merge_state == merge_rules.SKIPPED or run.status == RunStatus.CANCELLED:
        return "discarded"
    if repo and attempt.head_commit and attempt.branch:
        head = integration()
        if head and _is_ancestor(repo, attempt.head_commit, head):
            return "merged"
        if not _branch_head(repo, attempt.branch):
            return "discarded"  # its branch was deleted: nobody will merge it
    if expired and merge_state != merge_rules.RESOLVING:  # a person resolving a conflict by hand works in it
        return "expired"
    return None


def plan(*, older_than: timedelta | None = None, limit: int | None = None, now=None) -> tuple[list[Removal], int]:
    """What may go now (at most `limit` worktrees), and how many worktrees of ended batches stay."""
    now = now or timezone.now()
    older_than = older_than if older_than is not None else timedelta(hours=conf_retention())
    attempts = (
        RunAttempt.objects.select_related("run", "run__batch", "run__batch__workspace")
        .filter(run__batch__status__in=BATCH_TERMINAL)
        .exclude(worktree="")
        .filter(host__in=["", lifecycle.HOST])
        .order_by("run__batch_id", "run__order", "number")
    )
    rows = list(attempts)
    states = _merge_states([a.run_id for a in rows])
    removals: list[Removal] = []
    integrations: dict[int, Callable[[], str]] = {}
    kept = 0
    for attempt in rows:
        if limit is not None and len(removals) >= limit:
            break
        batch = attempt.run.batch
        ended = batch.finished_at or attempt.finished_at
        expired = ended is not None and now - ended >= older_than
        repo = batch.workspace.repo if hasattr(batch, "workspace") else ""
        repo = repo if repo and Path(repo).is_dir() else ""
        if batch.id not in integrations:  # looked up once per batch, when first needed
            integrations[batch.id] = functools.cache(
                functools.partial(_branch_head, repo, changes_rules.integration_branch(batch.id))
            )
        reason = _reason(
            attempt,
            expired=expired,
            merge_state=states.get(attempt.run_id),
            repo=repo,
            integration=integrations[batch.id],
        )
        if reason is None:
            kept += 1
            continue
        removals.append(
            Removal(
                path=attempt.worktree,
                reason=reason,
                batch_id=batch.id,
                key=attempt.run.key,
                attempt=attempt.number,
                repo=repo,
                bytes=worktrees_disk([attempt.worktree]) or 0,
            )
        )
    for removal in _integration_worktrees(now, older_than):
        if limit is not None and len(removals) >= limit:
            break
        removals.append(removal)
    for orphan in _orphans():
        if limit is not None and len(removals) >= limit:
            break
        removals.append(orphan)
    return removals, kept


def _integration_worktrees(now, older_than: timedelta) -> list[Removal]:
    """The merge queue's own worktree of an ended batch, once no step needs it (the queue made it
    and makes it again when a person reverts or resets), or past retention."""
    out = []
    workspaces_ = Workspace.objects.select_related("batch").filter(
        batch__status__in=BATCH_TERMINAL, isolation=Workspace.Isolation.WORKTREE
    )
    for ws in workspaces_:
        path = merging.integration_path(ws)
        if not path.is_dir():
            continue
        ended = ws.batch.finished_at
        expired = ended is not None and now - ended >= older_than
        busy = MergeStep.objects.filter(batch_id=ws.batch_id, state__in=QUEUE_BUSY).exists()
        if busy and not expired:
            continue
        if busy and MergeStep.objects.filter(batch_id=ws.batch_id, state=merge_rules.RESOLVING).exists():
            continue
        out.append(
            Removal(
                path=str(path),
                reason="expired" if busy else "merged",
                batch_id=ws.batch_id,
                key="(integration)",
                repo=ws.repo if Path(ws.repo).is_dir() else "",
                bytes=worktrees_disk([path]) or 0,
            )
        )
    return out


def branch_fate(step_state: str | None, run_status: str, on_integration: bool) -> str | None:
    """Pure: what a run's branch is, past the retention period: "merged" (its merge step says so, or,
    with no merge queue, its work is on the integration branch), "discarded" (its run was cancelled
    or its step skipped), or None: work nobody merged or discarded (a reverted merge included),
    which keeps its branch."""
    if step_state == merge_rules.SKIPPED or run_status == RunStatus.CANCELLED:
        return "discarded"
    if step_state == merge_rules.MERGED or (step_state is None and on_integration):
        return "merged"
    return None


def _run_heads(repo: str, ref: str = "refs/heads/spawner/", merged: str = "") -> dict[str, str]:
    """Branch name -> commit under `ref` (only those merged into `merged`, when given)."""
    argv = ["for-each-ref", "--format=%(refname) %(objectname)", *([f"--merged={merged}"] if merged else []), ref]
    listed = git.run(repo, *argv, check=False)
    heads = {}
    for line in listed.stdout.splitlines():
        name, _, commit = line.partition(" ")
        if name.startswith("refs/heads/") and commit:
            heads[name.removeprefix("refs/heads/")] = commit.strip()
    return heads


def _fate_now(run_id: int, on_integration: bool) -> str | None:
    """`branch_fate` of a run as the database says now."""
    run = AgentRun.objects.filter(id=run_id).values_list("status", flat=True).first()
    if run is None:
        return None
    return branch_fate(_merge_states([run_id]).get(run_id), run, on_integration)


def _stale_branches(now, older_than: timedelta, limit: int | None) -> list[BranchRemoval]:
    """Run branches of batches that ended longer ago than `older_than` whose work is merged or
    discarded (`branch_fate`). One `for-each-ref` per repository, and one per batch without a merge
    queue; other batches' branches, integration branches and unmerged work are left."""
    by_repo: dict[str, set[int]] = {}
    ended = Workspace.objects.filter(
        isolation=Workspace.Isolation.WORKTREE,
        batch__status__in=BATCH_TERMINAL,
        batch__finished_at__lte=now - older_than,
    ).values_list("repo", "batch_id")
    for repo, batch_id in ended:
        if repo and Path(repo).is_dir():
            by_repo.setdefault(repo, set()).add(batch_id)
    out: list[BranchRemoval] = []
    for repo, batch_ids in by_repo.items():
        heads = _run_heads(repo)
        live = {int(name.split("/")[1]) for name in heads if name.count("/") >= 2 and name.split("/")[1].isdigit()}
        batch_ids &= live  # batches whose branches are all gone cost nothing more
        if not batch_ids:
            continue
        rows = AgentRun.objects.filter(batch_id__in=batch_ids).values_list("id", "batch_id", "key", "status")
        branches = {changes_rules.run_branch(b, key): (run_id, b, status) for run_id, b, key, status in rows}
        present = {name: run for name, run in branches.items() if name in heads}
        states = _merge_states([run_id for run_id, _, _ in present.values()])
        merged_into: dict[int, set[str]] = {}
        for name, (run_id, batch_id, status) in sorted(present.items()):
            if limit is not None and len(out) >= limit:
                return out
            state = states.get(run_id)
            on_integration = False
            if state is None:  # no merge queue: the integration branch, if a person made one, says
                if batch_id not in merged_into:
                    integration = changes_rules.integration_branch(batch_id)
                    merged_into[batch_id] = (
                        set(_run_heads(repo, f"refs/heads/spawner/{batch_id}/", merged=integration))
                        if integration in heads
                        else set()
                    )
                on_integration = name in merged_into[batch_id]
            reason = branch_fate(state, status, on_integration)
            if reason:
                out.append(
                    BranchRemoval(
                        repo=repo, branch=name, commit=heads[name], reason=reason, batch_id=batch_id, run_id=run_id
                    )
                )
    return out


def _orphans() -> list[Removal]:
    """Batch directories under the workspace directory whose batch is gone from the database."""
    root = Path(settings.SPAWNER["WORKSPACE_DIR"])
    if not root.is_dir():
        return []
    found = {}
    for entry in root.iterdir():
        if entry.is_dir() and not entry.is_symlink() and (m := BATCH_DIR.match(entry.name)):
            found[int(m.group(1))] = entry
    known = set(Batch.objects.filter(id__in=found).values_list("id", flat=True))
    out = []
    for batch_id, path in sorted(found.items()):
        if batch_id in known:
            continue
        for worktree in sorted(p for p in path.iterdir() if p.is_dir()):
            common = git.run(worktree, "rev-parse", "--git-common-dir", check=False)
            repo = str(Path(worktree, common.stdout.strip()).resolve().parent) if common.returncode == 0 else ""
            out.append(
                Removal(
                    path=str(worktree),
                    reason="orphan",
                    batch_id=batch_id,
                    repo=repo,
                    bytes=worktrees_disk([worktree]) or 0,
                )
            )
        if not any(p.is_dir() for p in path.iterdir()):
            out.append(Removal(path=str(path), reason="orphan", batch_id=batch_id))
    return out


def conf_retention() -> float:
    return float(settings.SPAWNER["WORKTREE_RETENTION_HOURS"])


# --- removing ------------------------------------------------------------------------------------


def _unless_merging(removal: Removal):
    """The integration worktree is removed holding its merge lock (Busy if someone works in it)."""
    ws = merging.of(removal.batch_id) if removal.attempt is None and removal.key == "(integration)" else None
    return merging.locked(ws, wait=0) if ws is not None else contextlib.nullcontext()


def collect(
    *, older_than: timedelta | None = None, dry_run: bool = False, limit: int | None = None, now=None
) -> Report:
    """Remove what `plan` says may go (nothing with `dry_run`); git's records of them are pruned.
    Past the retention, merged and discarded run branches go too (`_stale_branches`). Returns what
    was (or would be) removed and the disk it freed."""
    removals, kept = plan(older_than=older_than, limit=limit, now=now)
    now = now or timezone.now()
    retention = older_than if older_than is not None else timedelta(hours=conf_retention())
    stale = _stale_branches(now, retention, limit)
    report = Report(kept=kept, dry_run=dry_run)
    if dry_run:
        report.removed, report.branches = removals, stale
        return report
    for removal in removals:
        if removal.reason != "orphan" and not _still_ended(removal):
            continue  # reopened meanwhile (a retry): its next attempt makes its own worktree
        path = Path(removal.path)
        try:
            with _unless_merging(removal):
                if removal.repo and Path(removal.repo).is_dir():
                    workspaces.remove_worktree(removal.repo, path)  # the worktree, and git's record pruned
                elif path.exists():
                    shutil.rmtree(path, ignore_errors=True)
        except merging.Busy:
            continue  # a person's revert or reset, or the queue, works in it right now
        if removal.attempt is not None:
            RunAttempt.objects.filter(
                run__batch_id=removal.batch_id, run__key=removal.key, number=removal.attempt, worktree=removal.path
            ).update(worktree="")
        _drop_empty(path.parent)
        report.removed.append(removal)
    report.branches = _delete_branches(stale)
    return report


def _delete_branches(stale: list[BranchRemoval]) -> list[BranchRemoval]:
    """`git branch -D` each that is still what was listed: the branch at the same commit and its run's
    fate unchanged (a person may have merged a skipped step meanwhile); git refuses one checked out
    in a worktree. Each deletion is logged with its commit (the way back: `git branch NAME COMMIT`)."""
    deleted = []
    for b in stale:
        if _branch_head(b.repo, b.branch) != b.commit:
            continue
        if b.reason == "discarded" and _fate_now(b.run_id, on_integration=False) != "discarded":
            continue
        if b.reason == "merged" and _fate_now(b.run_id, on_integration=True) != "merged":
            continue
        if git.run(b.repo, "branch", "-D", "--", b.branch, check=False).returncode == 0:
            log.warning("spawner gc: deleted branch %s (was %s, %s) in %s", b.branch, b.commit, b.reason, b.repo)
            deleted.append(b)
    return deleted


def _still_ended(removal: Removal) -> bool:
    return Batch.objects.filter(id=removal.batch_id, status__in=BATCH_TERMINAL).exists()


def _drop_empty(directory: Path) -> None:
    """A batch's worktree directory once its last worktree is gone."""
    root = Path(settings.SPAWNER["WORKSPACE_DIR"]).resolve()
    with contextlib.suppress(OSError):
        if directory.resolve().parent == root and BATCH_DIR.match(directory.name) and not any(directory.iterdir()):
            directory.rmdir()


# --- scheduled, from the cluster -----------------------------------------------------------------


def gc_loop(stop: threading.Event) -> None:
    """Every SPAWNER_GC_SECONDS, a bounded collection (SPAWNER_GC_LIMIT worktrees at most); the
    rest waits for the next round. Runs in a thread of the cluster's main process."""
    interval = settings.SPAWNER["GC_SECONDS"]
    while not stop.wait(interval):
        try:
            report = collect(limit=settings.SPAWNER["GC_LIMIT"])
            if report.removed or report.branches:
                log.warning(
                    "spawner gc: removed %s, freed %d bytes; deleted %s",
                    plural(len(report.removed), "worktree"),
                    report.freed,
                    plural(len(report.branches), "merged or discarded branch", "merged or discarded branches"),
                )
        except DatabaseError:
            log.exception("spawner gc failed; trying again next round")
        except Exception:  # housekeeping must never take the cluster down
            log.exception("spawner gc failed; trying again next round")
        finally:
            connections.close_all()


def start_gc_thread() -> tuple[threading.Thread | None, threading.Event]:
    stop = threading.Event()
    if settings.SPAWNER["GC_SECONDS"] <= 0:
        return None, stop
    thread = threading.Thread(target=gc_loop, args=(stop,), name="spawner-gc", daemon=True)
    thread.start()
    return thread, stop
