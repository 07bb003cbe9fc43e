"""Coding agents in git worktrees, against real git and a real cluster: each run isolated on its
own branch from a checkpoint, its changes committed and summarised, scope and gate enforced, the
user's checkout untouched."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from spawner import spec
from spawner.core import changes
from spawner.models import AgentRun, Escalation, RunAttempt, Workspace
from tests.conftest import ClusterProcess
from tests.spawner.helpers import launch, wait_batch

# Git's work, not the database's: run once, on the default backend (not again on PostgreSQL).
pytestmark = [pytest.mark.integration, pytest.mark.once]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def make_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "dev@example.com")
    git(path, "config", "user.name", "Dev")
    for name, text in (files or {"README.md": "hello\n", "src/app.py": "x = 1\n"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def checkout_state(repo: Path) -> tuple:
    """Everything of the user's checkout a run must not touch: HEAD, branch, index, status, files."""
    files = sorted(
        (str(p.relative_to(repo)), hashlib.sha256(p.read_bytes()).hexdigest())
        for p in repo.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    )
    index = hashlib.sha256((repo / ".git" / "index").read_bytes()).hexdigest()
    return (
        git(repo, "rev-parse", "HEAD"),
        git(repo, "symbolic-ref", "HEAD"),
        index,
        git(repo, "status", "--porcelain"),
        files,
    )


def spec_text(repo: Path, tasks: str, workspace: str = "", **batch) -> str:
    batch = {"max_parallel": 4, **batch}
    extra = "".join(f"{k}: {v}\n" for k, v in batch.items())
    return (
        f"name: ws\nagent: sh\n{extra}"
        f"workspace:\n  repo: {repo}\n  isolation: worktree\n  merge: none\n{workspace}tasks:\n{tasks}"
    )


def test_runs_edit_in_their_own_worktrees_and_the_checkout_is_untouched(cluster, agent_types, tmp_path):
    repo = make_repo(tmp_path / "repo")
    before = checkout_state(repo)
    tasks = (
        "  - {key: a, prompt: 'echo a > a.txt', files: [a.txt]}\n"
        "  - {key: b, prompt: 'echo b > b.txt; rm README.md', files: [b.txt, README.md]}\n"
        "  - {key: c, prompt: 'printf \"x = 2\\ny = 3\\n\" > src/app.py', files: [src/]}\n"
    )
    batch = wait_batch(launch(spec_text(repo, tasks), tmp_path), timeout=60)
    assert batch.status == "succeeded", [(r.key, r.error) for r in batch.runs.all()]
    ws = Workspace.objects.get(batch=batch)
    assert ws.checkpoint == git(repo, "rev-parse", "HEAD").strip()
    runs = {r.key: r for r in AgentRun.objects.filter(batch=batch)}
    assert [(f["path"], f["added"], f["removed"]) for f in runs["a"].changes["files"]] == [("a.txt", 1, 0)]
    assert sorted(f["path"] for f in runs["b"].changes["files"]) == ["README.md", "b.txt"]
    assert runs["c"].changes["added"] == 2 and runs["c"].changes["removed"] == 1
    for key, run in runs.items():
        assert run.changes["outside_scope"] == []
        branch = changes.run_branch(batch.id, key)
        assert git(repo, "rev-parse", branch).strip() == run.changes["head"]
        assert git(repo, "log", "-1", "--format=%an", branch).strip() == f"Spawner run {key} (batch {batch.id})"
        # Each branch holds only its own run's change.
        assert git(repo, "diff", "--name-only", ws.checkpoint, branch).split() == [
            f["path"] for f in run.changes["files"]
        ]
        attempt = RunAttempt.objects.get(run=run)
        diff = Path(attempt.log_path).with_name(f"{key}.1.diff").read_text()
        assert diff.startswith("diff --git")
    assert checkout_state(repo) == before


def test_a_dependent_task_starts_from_its_dependencies_work(cluster, agent_types, tmp_path):
    repo = make_repo(tmp_path / "repo")
    tasks = (
        "  - {key: a, prompt: 'echo from-a > a.txt'}\n"
        "  - {key: b, prompt: 'echo from-b > b.txt'}\n"
        "  - {key: c, depends_on: [a, b], prompt: 'cat a.txt b.txt > c.txt'}\n"
    )
    batch = wait_batch(launch(spec_text(repo, tasks), tmp_path), timeout=60)
    assert batch.status == "succeeded", [(r.key, r.error) for r in batch.runs.all()]
    c = AgentRun.objects.get(batch=batch, key="c")
    assert git(repo, "show", f"{changes.run_branch(batch.id, 'c')}:c.txt") == "from-a\nfrom-b\n"
    # c's own diff is its own change, not its dependencies'.
    assert [f["path"] for f in c.changes["files"]] == ["c.txt"]


@pytest.mark.parametrize(
    ("policy", "status", "escalated"),
    [("warn", "succeeded", False), ("fail", "failed", False), ("escalate", "succeeded", True)],
)
def test_an_edit_outside_the_declared_files(cluster, agent_types, tmp_path, policy, status, escalated):
    repo = make_repo(tmp_path / "repo")
    tasks = "  - {key: a, prompt: 'echo a > a.txt; echo oops >> README.md', files: [a.txt]}\n"
    batch = wait_batch(launch(spec_text(repo, tasks, f"  scope: {policy}\n"), tmp_path), timeout=60)
    run = AgentRun.objects.get(batch=batch, key="a")
    assert run.status == status
    assert run.changes["outside_scope"] == ["README.md"]
    if policy == "fail":
        assert "outside its files: README.md" in run.error
    assert Escalation.objects.filter(batch=batch, kind="scope").exists() == escalated


def test_a_failing_gate_fails_the_run_and_the_retry_starts_from_a_fresh_worktree(cluster, agent_types, tmp_path):
    repo = make_repo(tmp_path / "repo")
    marker = tmp_path / "first-try-done"
    prompt = (
        f"test ! -f junk.txt || exit 9; if [ -f {marker} ]; then echo ok > ok.txt; else touch {marker} junk.txt; fi"
    )
    tasks = f"  - key: a\n    retries: 1\n    prompt: '{prompt}'\n"
    gate = "test -f ok.txt && echo gate-passed || { echo gate says ok.txt is missing; exit 1; }"
    workspace = f"  gate: '{gate}'\n  setup: 'echo setting-up'\n"
    batch = wait_batch(launch(spec_text(repo, tasks, workspace, backoff=0.1), tmp_path), timeout=60)
    run = AgentRun.objects.get(batch=batch, key="a")
    assert run.status == "succeeded", run.error
    first, second = RunAttempt.objects.filter(run=run).order_by("number")
    assert first.status == "failed" and first.error.startswith("gate failed (exit 1)")
    assert "gate says ok.txt is missing" in first.error  # the gate's own output is the reason
    log = Path(second.log_path).read_text()
    assert "── spawner setup: echo setting-up ──\nsetting-up" in log
    assert "gate-passed" in log
    assert [f["path"] for f in run.changes["files"]] == ["ok.txt"]  # no junk from the first try
    assert not Path(first.worktree or "/nonexistent").exists()


def test_a_failing_setup_fails_the_attempt_before_the_agent_runs(cluster, agent_types, tmp_path):
    repo = make_repo(tmp_path / "repo")
    ran = tmp_path / "the-agent-ran"
    tasks = f"  - key: a\n    retries: 1\n    prompt: 'touch {ran}'\n"
    workspace = "  setup: 'echo installing; echo no such package >&2; exit 3'\n"
    batch = wait_batch(launch(spec_text(repo, tasks, workspace, backoff=0.1), tmp_path), timeout=60)
    run = AgentRun.objects.get(batch=batch, key="a")
    assert batch.status == "failed" and run.status == "failed"
    attempts = list(RunAttempt.objects.filter(run=run).order_by("number"))
    assert len(attempts) == 2  # a failed setup is a failure like any other: retried, then the run fails
    for attempt in attempts:
        assert attempt.error == "could not start: setup failed (exit 3): installing\nno such package"
        log = Path(attempt.log_path).read_text()
        assert "── spawner setup: echo installing" in log and "installing" in log
    assert not ran.exists()  # the agent never started


@pytest.fixture
def roomy_cluster(cluster, tmp_path):
    """The cluster with a lease long enough for 16 workers on a 2-core machine under load."""
    cluster.stop()
    roomy = ClusterProcess({**cluster.env, "SPAWNER_LEASE_SECONDS": "20"}, tmp_path / "roomy-cluster.log")
    roomy.start()
    yield roomy
    roomy.stop()


def test_sixteen_worktrees_created_at_once(roomy_cluster, agent_types, tmp_path):
    repo = make_repo(tmp_path / "repo")
    tasks = "".join(f"  - {{key: t{i}, prompt: 'echo {i} > f{i}.txt'}}\n" for i in range(16))
    batch = wait_batch(launch(spec_text(repo, tasks, max_parallel=16), tmp_path), timeout=120)
    assert batch.status == "succeeded", [(r.key, r.error) for r in batch.runs.all() if r.error]
    heads = {r.changes["head"] for r in batch.runs.all()}
    assert len(heads) == 16
    starts = sorted(RunAttempt.objects.filter(run__batch=batch).values_list("started_at", flat=True))
    assert (starts[-1] - starts[0]).total_seconds() < 10  # they did run side by side
    assert len(git(repo, "worktree", "list").splitlines()) == 17


def test_a_dirty_checkout_is_refused_or_snapshotted(agent_types, tmp_path, settings):
    settings.SPAWNER = {**settings.SPAWNER, "WORKSPACE_DIR": tmp_path / "ws"}
    repo = make_repo(tmp_path / "repo")
    (repo / "README.md").write_text("changed, not committed\n")
    (repo / "new.txt").write_text("new\n")
    tasks = "  - {key: a, prompt: 'true'}\n"
    with pytest.raises(spec.SpecInvalid) as caught:
        launch(spec_text(repo, tasks), tmp_path)
    (error,) = caught.value.errors
    assert error.field == "workspace.repo" and "2 uncommitted changes" in str(error)
    before = checkout_state(repo)
    batch = launch(spec_text(repo, tasks, "  allow_dirty: true\n"), tmp_path)
    ws = Workspace.objects.get(batch=batch)
    assert ws.snapshot and ws.checkpoint != git(repo, "rev-parse", "HEAD").strip()
    assert git(repo, "show", f"{ws.checkpoint}:README.md") == "changed, not committed\n"
    assert git(repo, "show", f"{ws.checkpoint}:new.txt") == "new\n"
    assert checkout_state(repo) == before  # the index and files as they were


@pytest.mark.parametrize(
    ("workspace", "field", "says"),
    [
        ("  base: no-such-branch\n", "workspace.base", "is not a branch, tag or commit"),
        ("  base: '--upload-pack=x'\n", "workspace.base", "must be a branch, tag or commit name"),
        ("  merge: sideways\n", "workspace.merge", "must be one of"),
        ("  colour: red\n", "workspace.colour", "unknown field"),
    ],
)
def test_workspace_mistakes_are_named(agent_types, tmp_path, workspace, field, says):
    repo = make_repo(tmp_path / "repo")
    with pytest.raises(spec.SpecInvalid) as caught:
        launch(spec_text(repo, "  - {key: a, prompt: 'true'}\n", workspace), tmp_path)
    assert any(e.field == field and says in str(e) for e in caught.value.errors), caught.value.errors


def test_not_a_repository(agent_types, tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(spec.SpecInvalid) as caught:
        launch(spec_text(tmp_path / "plain", "  - {key: a, prompt: 'true'}\n"), tmp_path)
    assert "is not inside a git repository" in str(caught.value.errors[0])


def test_setup_and_gate_are_for_admins(agent_types):
    from spawner import services

    text = "name: x\nagent: sh\nworkspace: {repo: ., gate: 'pytest'}\ntasks: [{key: a, prompt: 'true'}]\n"
    with pytest.raises(spec.SpecInvalid) as caught:
        services.spec_load(text, is_admin=False)
    assert "may only be set by an admin" in str(caught.value.errors[0])


def test_a_worker_killed_during_the_gate_is_not_harvested_as_done(cluster, agent_types, tmp_path):
    """kill -9 of the worker while the gate runs: the gate's process group is stopped by the reaper,
    the attempt is lost (not harvested as a success: its gate never passed), the retry starts afresh."""
    import os
    import signal

    from tests.spawner.helpers import pid_alive, wait_for

    repo = make_repo(tmp_path / "repo")
    gate_pid = tmp_path / "gate.pid"
    gate = f"if [ ! -f {gate_pid} ]; then echo $$ > {gate_pid}; sleep 60; fi; true"
    tasks = "  - {key: a, retries: 1, prompt: 'echo a > a.txt'}\n"
    batch = launch(spec_text(repo, tasks, f"  gate: '{gate}'\n", backoff=0.1), tmp_path)
    wait_for(lambda: gate_pid.exists() and gate_pid.read_text().strip(), 30, "the gate to start")
    attempt = RunAttempt.objects.get(run__batch=batch, number=1)
    os.kill(attempt.worker_pid, signal.SIGKILL)
    batch = wait_batch(batch, timeout=60)
    attempts = list(RunAttempt.objects.filter(run__batch=batch).order_by("number").values_list("status", "error"))
    assert len(attempts) == 2, attempts
    first, second = RunAttempt.objects.filter(run__batch=batch).order_by("number")
    assert first.status == "lost" and "were not committed and checked" in first.error
    assert second.status == "succeeded" and batch.status == "succeeded"
    assert not pid_alive(int(gate_pid.read_text())), "the gate was stopped with its worker's attempt"


def test_git_waits_out_another_worktree_add_half_way():
    from spawner.engine import git as engine_git

    # What `git worktree add` says when it reads a worktree another `worktree add` has not filled yet.
    assert engine_git._locked("fatal: failed to read .git/worktrees/b1-t11-1/commondir: Success")
    assert engine_git._locked("fatal: Unable to create '/r/.git/refs/heads/x.lock': File exists.")
    assert not engine_git._locked("fatal: invalid reference: nope")


def test_sixteen_worktree_adds_released_together(tmp_path):
    """The engine's own call, from 16 threads let go at the same instant (the bench's shape)."""
    import threading

    from spawner.engine import git as engine_git

    repo = make_repo(tmp_path / "repo", {f"d{i // 50}/f{i}.txt": f"{i}\n" for i in range(300)})
    head = git(repo, "rev-parse", "HEAD").strip()
    barrier = threading.Barrier(16)
    errors = []

    def add(i: int) -> None:
        barrier.wait()
        try:
            engine_git.run(repo, "worktree", "add", "--force", "-B", f"spawner/1/t{i}", str(tmp_path / f"w{i}"), head)
        except engine_git.GitError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=add, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len(git(repo, "worktree", "list").splitlines()) == 17


def test_a_git_command_that_outlives_its_bound_is_a_git_error(tmp_path):
    from spawner.engine import git as engine_git

    repo = make_repo(tmp_path / "repo")
    slow = ("-c", "alias.slow=!sleep 2", "slow")
    with pytest.raises(engine_git.GitError, match="git slow timed out after 0.5 s"):
        engine_git.run(repo, *slow, timeout=0.5)
    assert engine_git.run(repo, *slow, timeout=0.5, check=False).returncode == -9


def test_an_agent_that_repoints_its_worktrees_git_file_gets_no_git_run_there(cluster, agent_types, tmp_path):
    """The worktree's .git file is in the agent's directory: pointed at the user's repository, a
    `git add`/`commit` there would commit onto the user's branch. Spawner refuses to run git there."""
    repo = make_repo(tmp_path / "repo")
    before = checkout_state(repo)
    prompt = f"echo x > x.txt; printf 'gitdir: {repo}/.git\\\\n' > .git"
    batch = wait_batch(launch(spec_text(repo, f'  - {{key: a, prompt: "{prompt}"}}\n'), tmp_path), timeout=60)
    run = AgentRun.objects.get(batch=batch, key="a")
    assert run.status == "failed" and ".git file was changed" in run.error, run.error
    assert checkout_state(repo) == before, "nothing was committed onto the user's branch, the index is as it was"


def test_a_repository_above_the_base_directory_is_refused_to_browser_users(agent_types, tmp_path):
    from spawner import services

    outer = make_repo(tmp_path / "outer")
    (outer / "base" / "proj").mkdir(parents=True)
    text = "name: x\nagent: sh\nworkspace: {repo: proj}\ntasks: [{key: a, prompt: 'true'}]\n"
    batch_spec = services.spec_load(text, is_admin=False)
    with pytest.raises(spec.SpecInvalid) as caught:
        services.batch_check(batch_spec, outer / "base", confine=True)
    assert "belongs to a repository outside the server's base directory" in str(caught.value.errors[0])


@pytest.mark.parametrize("kind", ["bare", "empty"])
def test_a_bare_or_empty_repository_is_named_as_such(agent_types, tmp_path, kind):
    path = tmp_path / "r"
    subprocess.run(["git", "init", "-q", *(["--bare"] if kind == "bare" else []), str(path)], check=True)
    text = f"name: x\nagent: sh\nworkspace: {{repo: {path}}}\ntasks: [{{key: a, prompt: 'true'}}]\n"
    with pytest.raises(spec.SpecInvalid) as caught:
        launch(text, tmp_path)
    says = "is a bare repository" if kind == "bare" else "has no commits yet"
    assert says in str(caught.value.errors[0])


def test_the_checkpoint_leaves_the_users_index_alone(agent_types, tmp_path, settings):
    """`git status` would refresh (rewrite) the index of a checkout whose files were touched."""
    import os

    settings.SPAWNER = {**settings.SPAWNER, "WORKSPACE_DIR": tmp_path / "ws"}
    repo = make_repo(tmp_path / "repo")
    os.utime(repo / "README.md", (1, 1))  # same content, new times: a stat-dirty entry
    index = (repo / ".git" / "index").read_bytes()
    launch(spec_text(repo, "  - {key: a, prompt: 'true'}\n"), tmp_path)
    assert (repo / ".git" / "index").read_bytes() == index


def test_running_a_batch_with_setup_or_gate_again_needs_an_admin(agent_types, tmp_path, settings, django_user_model):
    from spawner import services
    from spawner.errors import NotAllowed

    settings.SPAWNER = {**settings.SPAWNER, "WORKSPACE_DIR": tmp_path / "ws"}
    repo = make_repo(tmp_path / "repo")
    batch = launch(spec_text(repo, "  - {key: a, prompt: 'true'}\n", "  gate: 'true'\n"), tmp_path)
    teammate = django_user_model.objects.create_user("teammate")
    admin = django_user_model.objects.create_superuser("boss")
    runs = list(batch.runs.select_related("agent_type"))
    with pytest.raises(NotAllowed, match="setup or gate commands"):
        services._refuse_admin_only(runs, teammate)
    services._refuse_admin_only(runs, admin)  # an admin may
