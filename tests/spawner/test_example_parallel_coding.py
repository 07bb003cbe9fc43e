"""examples/parallel-coding.yaml, as a newcomer runs it: the scripted coding agent edits a throwaway
repository in parallel worktrees; two independent edits, one scope violation, one conflict."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from io import StringIO

import pytest
from django.apps import apps
from django.core.management import call_command

from spawner.core import changes
from spawner.models import AgentRun, AgentType, Batch, Escalation
from tests.conftest import ROOT
from tests.spawner.helpers import wait_for
from tests.spawner.test_workspaces import git

EXAMPLE = ROOT / "examples" / "parallel-coding.yaml"
AGENT = ROOT / "examples" / "agents" / "coding_agent.py"


def agent(cwd, prompt: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPAWNER_RESULT_FILE": str(cwd / "result.json")}
    return subprocess.run(
        [sys.executable, str(AGENT), *args], input=prompt, cwd=cwd, env=env, capture_output=True, text=True
    )


def test_the_coding_agent_edits_as_its_prompt_says(tmp_path):
    (tmp_path / "a.txt").write_text("one\ntwo\nthree\n")
    prompt = (
        "Some prose from a role template, ignored.\n"
        "replace line 2 of a.txt with 'TWO'\n"
        "insert zero before line 1 of a.txt\n"
        "delete line 4 of a.txt\n"
        "append 'four: \"4\"' to a.txt\n"
        "create sub/new.md with '# New\\n\\nbody'\n"
    )
    done = agent(tmp_path, prompt)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a.txt").read_text() == 'zero\none\nTWO\nfour: "4"\n'
    assert (tmp_path / "sub" / "new.md").read_text() == "# New\n\nbody\n"
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["verdict"] == "pass" and result["summary"].startswith("replaced line 2 of a.txt; inserted")
    # The prompt may also come as arguments.
    assert agent(tmp_path, "", "append", "x", "to", "a.txt").returncode == 0
    assert (tmp_path / "a.txt").read_text().endswith('four: "4"\nx\n')


@pytest.mark.parametrize(
    ("prompt", "says"),
    [
        ("append x to ../outside.txt", "outside the working directory"),
        ("create .git/config with x", "outside the working directory"),
        ("replace line 9 of a.txt with x", "a.txt has 1 line: there is no line 9"),
        ("append x to missing.txt", "missing.txt does not exist"),
        ("replace the bug", "cannot read the instruction"),
        ("just prose", "holds no instruction"),
    ],
)
def test_the_coding_agent_refuses_what_it_cannot_do(tmp_path, prompt, says):
    (tmp_path / "a.txt").write_text("one\n")
    done = agent(tmp_path, prompt)
    assert done.returncode == 2 and says in done.stderr
    assert json.loads((tmp_path / "result.json").read_text())["verdict"] == "fail"
    assert not (tmp_path.parent / "outside.txt").exists()


def merge_tree(repo, a: str, b: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "merge-tree", "--write-tree", "--name-only", a, b], cwd=repo, capture_output=True, text=True
    )


@pytest.mark.integration
@pytest.mark.once  # git's work, not the database's: the default backend only
def test_the_example_runs_from_the_cli_in_isolated_worktrees(cluster, tmp_path, settings, capsys):
    # The layout the example expects, in a temp dir: <root>/examples/parallel-coding.yaml, <root>/var/demo-repo;
    # <root> is the base directory, where the relative paths of a spec file inside it start.
    settings.SPAWNER_WORKDIR = tmp_path
    (tmp_path / "examples").mkdir()
    spec_file = tmp_path / "examples" / "parallel-coding.yaml"
    shutil.copy(EXAMPLE, spec_file)
    repo = tmp_path / "var" / "demo-repo"
    out = StringIO()
    call_command("spawner_demo", "--repo", str(repo), stdout=out)
    assert "agent type coding-demo: created" in out.getvalue() and f"created {repo}" in out.getvalue()
    assert AgentType.objects.get(name="coding-demo").argv == ["python3", str(AGENT)]
    call_command("spawner_demo", "--repo", str(repo), stdout=StringIO())  # idempotent
    head = git(repo, "rev-parse", "HEAD").strip()

    try:
        call_command("spawn", str(spec_file), "--wait", stdout=StringIO())
    except SystemExit as exc:  # non-zero when the batch did not fully succeed
        pytest.fail(f"spawn exited {exc.code}")
    batch = Batch.objects.get()
    runs = {r.key: r for r in AgentRun.objects.filter(batch=batch)}
    # What the newcomer reads in the terminal: the queue, the conflict, and how to take the result.
    printed = capsys.readouterr().out
    integration = changes.integration_branch(batch.id)
    assert f"merge queue (sequential) onto {integration}:" in printed
    for line in ("1. title: merged (", "greeting: merged (", "config: merged (", "usage: conflict"):
        assert line in printed, printed[-3000:]
    assert "conflicting files: README.md" in printed
    assert "take it (nothing was pushed, none of your branches changed):" in printed
    assert f"git merge {integration}" in printed
    assert {k: r.status for k, r in runs.items()} == dict.fromkeys(
        ("title", "greeting", "config", "usage"), "succeeded"
    )

    # Each run changed what its prompt said, on its own branch.
    assert {k: [f["path"] for f in r.changes["files"]] for k, r in runs.items()} == {
        "title": ["README.md"],
        "greeting": ["app/greeting.py"],
        "config": ["app/config.py"],
        "usage": ["README.md", "docs/index.md", "docs/usage.md"],
    }
    # The scope violation is recorded (scope: warn), and only for usage.
    assert {k: r.changes["outside_scope"] for k, r in runs.items()} == {
        "title": [],
        "greeting": [],
        "config": [],
        "usage": ["README.md"],
    }
    branch = {k: changes.run_branch(batch.id, k) for k in runs}
    # title and usage rewrote the same line: the merge pre-check's `git merge-tree` sees the conflict ...
    conflict = merge_tree(repo, branch["title"], branch["usage"])
    assert conflict.returncode == 1 and "README.md" in conflict.stdout
    # ... while greeting, config and title merge cleanly together.
    clean = merge_tree(repo, branch["greeting"], branch["config"])
    assert clean.returncode == 0, clean.stdout
    assert merge_tree(repo, branch["title"], branch["greeting"]).returncode == 0
    # The demo repository's own checkout is untouched.
    assert git(repo, "rev-parse", "HEAD").strip() == head
    assert git(repo, "status", "--porcelain") == ""

    if not _has_merge_queue():
        return
    # With the merge queue (merge: sequential): three merged in plan order, usage's conflict escalated.
    step = apps.get_model("spawner", "MergeStep")
    assert not step.objects.filter(batch=batch, state="queued").exists(), "spawn --wait waited for the queue"
    wait_for(lambda: step.objects.filter(batch=batch, state="conflict").exists(), 30, "the conflict")
    states = dict(step.objects.filter(batch=batch).values_list("run__key", "state"))
    assert states == {"title": "merged", "greeting": "merged", "config": "merged", "usage": "conflict"}
    assert Escalation.objects.filter(batch=batch, kind="conflict", run=runs["usage"]).exists()
    assert git(repo, "show", f"{integration}:README.md").startswith("# Greeter\n")
    assert '"!"' in git(repo, "show", f"{integration}:app/config.py")

    # A person resolves the example's own conflict, as the batch page's "keep a side" does: README.md
    # keeps title's line (ours: the integration branch), the rest of usage's work goes in.
    from django.contrib.auth.models import User

    from spawner import services

    admin = User.objects.create_superuser("ada", password="pw-ada-12345")
    usage = step.objects.get(batch=batch, run__key="usage")
    assert usage.conflict["files"] == ["README.md"], usage.conflict
    services.merge_step_keep_sides(step=usage, sides={"README.md": "ours"}, actor=admin)
    wait_for(lambda: step.objects.get(id=usage.id).state == "merged", 30, "usage merged after the resolution")
    assert git(repo, "show", f"{integration}:README.md").startswith("# Greeter\n")  # the side kept
    assert "# Usage" in git(repo, "show", f"{integration}:docs/usage.md")  # and usage's own work
    assert "- [Usage](usage.md)" in git(repo, "show", f"{integration}:docs/index.md")
    conflict_escalation = Escalation.objects.get(batch=batch, kind="conflict", run=runs["usage"])
    assert conflict_escalation.state == "resolved" and conflict_escalation.resolved_by == admin
    assert git(repo, "rev-parse", "HEAD").strip() == head  # still: nothing touched the user's checkout


def _has_merge_queue() -> bool:
    try:
        apps.get_model("spawner", "MergeStep")
    except LookupError:
        return False
    return True


def test_the_example_as_a_browser_starting_point_resolves_inside_the_base_dir(db, tmp_path, settings):
    from spawner import selectors, services

    data = selectors.example_spec("parallel-coding")
    assert data["cwd"] == "." and data["workspace"]["repo"] == "var/demo-repo"  # base dir = the project root
    assert [t["key"] for t in data["tasks"]] == ["title", "greeting", "config", "usage"]
    assert selectors.example_spec("../pyproject") is None and selectors.example_spec("nope") is None
    # The browser's check (confined to its base dir) passes once the demo repository is there.
    call_command("spawner_demo", "--repo", str(tmp_path / "var" / "demo-repo"), stdout=StringIO())
    batch_spec = services.spec_load(json.dumps(data), is_admin=False)
    batch_cwd, _ = services.batch_check(batch_spec, tmp_path, confine=True)
    assert batch_cwd == tmp_path.resolve()
    settings.SPAWNER_WORKDIR = tmp_path / "elsewhere"
    assert selectors.example_spec("parallel-coding") is None
