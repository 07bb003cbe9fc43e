"""Housekeeping against real git and a real cluster: `spawner_gc` lists, then removes the worktrees
of ended batches that are merged, discarded or past retention; git's records go, branches stay,
running batches are left alone."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from spawner import selectors, services
from spawner.core import changes
from spawner.engine import housekeeping
from spawner.models import AgentRun, RunAttempt
from tests.spawner.helpers import launch, wait_batch, wait_for
from tests.spawner.test_workspaces import git, make_repo, spec_text

# Git's work, not the database's: run once, on the default backend (not again on PostgreSQL).
pytestmark = [pytest.mark.integration, pytest.mark.once]

TWO = "  - {key: a, prompt: 'echo a > a.txt'}\n  - {key: b, prompt: 'echo b > b.txt'}\n"


def gc(*args: str) -> str:
    out = StringIO()
    call_command("spawner_gc", *args, stdout=out)
    return out.getvalue()


def worktrees(batch) -> dict[str, str]:
    return dict(RunAttempt.objects.filter(run__batch=batch).values_list("run__key", "worktree"))


def ended_batch(tmp_path, tasks=TWO):
    repo = make_repo(tmp_path / "repo")
    batch = wait_batch(launch(spec_text(repo, tasks), tmp_path), timeout=60)
    assert batch.status == "succeeded", [(r.key, r.error) for r in batch.runs.all()]
    return repo, batch


def test_dry_run_lists_then_a_real_run_removes_worktrees_and_records_and_keeps_branches(cluster, agent_types, tmp_path):
    repo, batch = ended_batch(tmp_path)
    paths = worktrees(batch)
    assert all(Path(p).is_dir() for p in paths.values())
    disk = selectors.workspace_disk(batch)
    assert disk > 0

    out = gc()  # within the retention period and not merged: everything stays
    assert "removed 0 worktrees" in out and "2 kept" in out

    out = gc("--older-than", "0", "--dry-run")
    assert "would remove 2 worktrees" in out
    assert f"batch {batch.id} run a attempt 1, expired" in out
    assert all(Path(p).is_dir() for p in paths.values())
    assert len(git(repo, "worktree", "list").splitlines()) == 3

    out = gc("--older-than", "0")
    assert "removed 2 worktrees, freed" in out
    assert not any(Path(p).exists() for p in paths.values())
    assert not (tmp_path / "workspaces" / f"batch-{batch.id}").exists()
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1  # git's records pruned
    for key in ("a", "b"):  # the work stays on its branch
        assert git(repo, "show", f"{changes.run_branch(batch.id, key)}:{key}.txt") == f"{key}\n"
    assert worktrees(batch) == {"a": "", "b": ""}
    assert selectors.workspace_disk(batch) == 0
    assert "removed 0 worktrees" in gc("--older-than", "0")


def test_merged_and_discarded_runs_lose_their_worktrees_before_retention(cluster, agent_types, tmp_path):
    repo, batch = ended_batch(tmp_path)
    a, b = changes.run_branch(batch.id, "a"), changes.run_branch(batch.id, "b")
    git(repo, "branch", changes.integration_branch(batch.id), a)  # a's work is merged
    paths = worktrees(batch)
    out = gc()
    assert f"batch {batch.id} run a attempt 1, merged" in out and "removed 1 worktree" in out
    assert not Path(paths["a"]).exists() and Path(paths["b"]).is_dir()

    git(repo, "worktree", "remove", "--force", paths["b"])  # git cannot delete a checked-out branch
    git(repo, "worktree", "add", "-q", "--detach", paths["b"], b)
    git(repo, "branch", "-D", b)  # b's work discarded
    out = gc()
    assert f"batch {batch.id} run b attempt 1, discarded" in out
    assert not Path(paths["b"]).exists()
    assert git(repo, "rev-parse", "--verify", a).strip()  # merged branches are not gc's to delete


def test_a_running_batch_is_left_alone(cluster, agent_types, tmp_path):
    repo = make_repo(tmp_path / "repo")
    batch = launch(spec_text(repo, "  - {key: slow, prompt: 'sleep 30'}\n"), tmp_path)
    # The worktree is recorded before git creates it (a dead worker's next attempt finds it): wait for both.
    path = wait_for(lambda: (p := worktrees(batch).get("slow")) and Path(p, ".git").exists() and p, 30, "the worktree")
    assert "removed 0 worktrees" in gc("--older-than", "0")
    assert Path(path).is_dir()
    services.batch_cancel(batch=batch)
    wait_batch(batch, timeout=30)
    out = gc()  # a cancelled run's work is discarded
    assert "run slow attempt 1, discarded" in out and not Path(path).exists()


def test_a_directory_of_a_batch_that_no_longer_exists_goes(agent_types, tmp_path, settings):
    settings.SPAWNER = {**settings.SPAWNER, "WORKSPACE_DIR": tmp_path / "ws"}
    stray = tmp_path / "ws" / "batch-987654" / "b987654-x-1"
    stray.mkdir(parents=True)
    (stray / "file.txt").write_text("left behind\n")
    (tmp_path / "ws" / "not-a-batch").mkdir()
    out = gc()
    assert "orphan" in out and not (tmp_path / "ws" / "batch-987654").exists()
    assert (tmp_path / "ws" / "not-a-batch").is_dir()


def test_the_scheduled_round_is_bounded(cluster, agent_types, tmp_path, settings):
    settings.SPAWNER = {**settings.SPAWNER, "WORKTREE_RETENTION_HOURS": 0}
    _, batch = ended_batch(tmp_path)
    report = housekeeping.collect(limit=1)
    assert len(report.removed) == 1 and report.freed > 0
    assert sorted(bool(p) for p in worktrees(batch).values()) == [False, True]


def test_after_the_merge_queue_is_done_its_worktrees_go_and_its_branches_stay(cluster, agent_types, tmp_path):
    from spawner.engine import merging
    from spawner.models import MergeStep, Workspace

    repo = make_repo(tmp_path / "repo")
    text = spec_text(repo, TWO).replace("merge: none", "merge: sequential")
    batch = wait_batch(launch(text, tmp_path), timeout=60)
    wait_for(
        lambda: set(MergeStep.objects.filter(batch=batch).values_list("state", flat=True)) == {"merged"},
        30,
        "both merged",
    )
    integration = merging.integration_path(Workspace.objects.get(batch=batch))
    assert integration.is_dir()
    assert selectors.workspace_disk(batch) > 0
    out = gc()
    assert "removed 3 worktrees" in out, out
    assert f"batch {batch.id} (integration), merged" in out
    assert not integration.exists() and not any(worktrees(batch).values())
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    branch = changes.integration_branch(batch.id)
    assert git(repo, "show", f"{branch}:a.txt") == "a\n" and git(repo, "show", f"{branch}:b.txt") == "b\n"


def test_a_cluster_collects_on_its_own_every_gc_seconds(transactional_db, agent_types, tmp_path, settings):
    import os

    from tests.conftest import CLUSTER_ENV, ClusterProcess, database_url_for_subprocess

    workspace_dir = tmp_path / "workspaces"
    settings.SPAWNER = {**settings.SPAWNER, "LOG_DIR": tmp_path / "logs", "WORKSPACE_DIR": workspace_dir}
    env = {
        **os.environ,
        **CLUSTER_ENV,
        "DATABASE_URL": database_url_for_subprocess(),
        "SPAWNER_LOG_DIR": str(tmp_path / "logs"),
        "SPAWNER_WORKSPACE_DIR": str(workspace_dir),
        "SPAWNER_GC_SECONDS": "0.5",
        "SPAWNER_WORKTREE_RETENTION_HOURS": "0",
    }
    cluster = ClusterProcess(env, tmp_path / "cluster.log")
    cluster.start()
    try:
        repo, batch = ended_batch(tmp_path)
        wait_for(lambda: not any(worktrees(batch).values()), 30, "the cluster's gc round")
        assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
        assert git(repo, "rev-parse", "--verify", changes.run_branch(batch.id, "a")).strip()
    finally:
        cluster.stop()


def test_past_retention_merged_and_discarded_branches_go_and_the_rest_stay(cluster, agent_types, tmp_path):
    tasks = TWO + "  - {key: c, prompt: 'echo c > c.txt'}\n"
    repo, batch = ended_batch(tmp_path, tasks)
    a, b, c = (changes.run_branch(batch.id, k) for k in "abc")
    integration = changes.integration_branch(batch.id)
    git(repo, "branch", integration, a)  # a's work is merged
    AgentRun.objects.filter(batch=batch, key="b").update(status="cancelled")  # b's is discarded
    tips = {k: git(repo, "rev-parse", changes.run_branch(batch.id, k)).strip() for k in "abc"}

    out = gc()  # within the retention period every branch stays (a reset may merge them again)
    assert "deleted 0 branches" in out and git(repo, "rev-parse", "--verify", a).strip() == tips["a"]

    out = gc("--older-than", "0", "--dry-run")
    assert f"would delete branch {a} (was {tips['a'][:12]}, merged)" in out
    assert f"would delete branch {b} (was {tips['b'][:12]}, discarded)" in out
    assert c not in out and "would delete 2 branches" in out
    out = gc("--older-than", "0")
    assert "deleted 2 branches" in out, out
    heads = git(repo, "for-each-ref", "--format=%(refname:short)", f"refs/heads/spawner/{batch.id}/")
    assert sorted(heads.split()) == sorted([c, integration])  # unmerged work and the integration branch stay
    git(repo, "branch", b, tips["b"])  # the printed commit brings a branch back
    assert git(repo, "show", f"{b}:b.txt") == "b\n"


@pytest.mark.parametrize(
    ("state", "status", "on_integration", "fate"),
    [
        ("merged", "succeeded", True, "merged"),
        ("skipped", "succeeded", False, "discarded"),
        (None, "cancelled", False, "discarded"),
        ("reverted", "succeeded", True, None),  # its merge was undone: the page offers to merge it again
        ("conflict", "succeeded", False, None),
        ("waiting", "succeeded", False, None),
        (None, "succeeded", True, "merged"),  # no merge queue: a person merged it into the integration branch
        (None, "succeeded", False, None),
        (None, "failed", False, None),
    ],
)
def test_which_branches_go_past_retention(state, status, on_integration, fate):
    assert housekeeping.branch_fate(state, status, on_integration) == fate
