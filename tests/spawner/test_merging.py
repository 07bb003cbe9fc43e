"""The merge queue against real git and a real cluster: succeeded runs merged onto the batch's
integration branch in plan order, each merge a commit; the pre-check's conflict matrix; a conflict
escalated with its hunks and resolved (one side per file, a re-run on top, by hand); revert, reset,
a gate failing on the integration branch, manual mode, a race's winner; the user's checkout untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from spawner import selectors, services
from spawner.core import changes
from spawner.errors import ActionRefused
from spawner.models import AgentRun, AgentType, Escalation, MergeStep, RunAttempt, RunEvent, Workspace
from tests.spawner.helpers import launch, wait_batch, wait_for
from tests.spawner.test_workspaces import checkout_state, git, make_repo

# Runs on PostgreSQL too: the merge services take row locks there.
pytestmark = pytest.mark.integration

# Runs the prompt's first line as a shell command (what follows, such as a re-run's conflict note,
# is prose), and keeps the whole prompt beside its result file for the test to read.
FIRST_LINE = 'printf "%s" "$1" > "$2.prompt"; eval "$(printf "%s\\n" "$1" | head -n 1)"'


@pytest.fixture
def sh1(agent_types):
    AgentType.objects.get_or_create(
        name="sh1", defaults={"argv": ["sh", "-c", FIRST_LINE, "agent", "{prompt}", "{result_file}"]}
    )


def spec_text(repo: Path, tasks: str, merge: str = "sequential", workspace: str = "", **batch) -> str:
    batch = {"max_parallel": 4, **batch}
    extra = "".join(f"{k}: {v}\n" for k, v in batch.items())
    return (
        f"name: merging\nagent: sh1\n{extra}"
        f"workspace:\n  repo: {repo}\n  isolation: worktree\n  merge: {merge}\n{workspace}tasks:\n{tasks}"
    )


def steps(batch) -> dict[str, MergeStep]:
    return {s.run.key: s for s in MergeStep.objects.filter(batch=batch).select_related("run")}


def wait_steps(batch, expected: dict[str, str], timeout: float = 60) -> dict[str, MergeStep]:
    def reached():
        found = steps(batch)
        return found if {k: s.state for k, s in found.items()} == expected else None

    try:
        return wait_for(reached, timeout, f"merge steps {expected}")
    except AssertionError:
        raise AssertionError(
            f"merge steps are {[(k, s.state, s.error) for k, s in steps(batch).items()]}, not {expected}"
        ) from None


def integration(batch) -> str:
    return changes.integration_branch(batch.id)


def show(repo: Path, rev: str, path: str) -> str | None:
    try:
        return git(repo, "show", f"{rev}:{path}")
    except Exception:  # noqa: BLE001 - absent
        return None


def merges(repo: Path, batch) -> list[str]:
    ws = Workspace.objects.get(batch=batch)
    return git(repo, "log", "--merges", "--format=%s", f"{ws.checkpoint}..{integration(batch)}").splitlines()


CONFLICTING = (
    "  - {key: a, prompt: 'printf \"one\\nfrom a\\nthree\\n\" > README.md'}\n"
    "  - {key: b, prompt: 'printf \"one\\nfrom b\\nthree\\n\" > README.md'}\n"
    "  - {key: c, prompt: 'echo c > c.txt'}\n"
)


def conflicting_batch(repo: Path, tmp_path: Path):
    batch = wait_batch(launch(spec_text(repo, CONFLICTING), tmp_path), timeout=60)
    assert batch.status == "succeeded", [(r.key, r.error) for r in batch.runs.all()]
    return batch, wait_steps(batch, {"a": "merged", "b": "conflict", "c": "merged"})


def new_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"README.md": "one\ntwo\nthree\n", "src/app.py": "x = 1\n"})


def test_three_runs_on_different_files_are_all_merged_each_in_its_own_commit(cluster, sh1, tmp_path):
    repo = new_repo(tmp_path)
    before = checkout_state(repo)
    tasks = (
        "  - {key: a, prompt: 'echo a > a.txt'}\n"
        "  - {key: b, prompt: 'echo b > b.txt', priority: P0}\n"
        "  - {key: c, prompt: 'echo c > c.txt'}\n"
    )
    batch = wait_batch(launch(spec_text(repo, tasks), tmp_path), timeout=60)
    assert batch.status == "succeeded", [(r.key, r.error) for r in batch.runs.all()]
    found = wait_steps(batch, {"a": "merged", "b": "merged", "c": "merged"})
    # Plan order, the P0 first within its wave; each merge its own commit, naming its run.
    assert sorted(found, key=lambda k: found[k].position) == ["b", "a", "c"]
    assert merges(repo, batch) == [f"Spawner: merge run {k} (batch {batch.id})" for k in ("c", "a", "b")]
    for key, step in found.items():
        assert git(repo, "rev-parse", f"{step.merge_commit}^2").strip() == step.merged_head
        assert show(repo, integration(batch), f"{key}.txt") == f"{key}\n"
    assert git(repo, "log", "-1", "--format=%cn", integration(batch)).strip() == "Spawner"
    queue = selectors.merge_queue(batch)
    assert [s["state"] for s in queue["steps"]] == ["merged"] * 3
    assert queue["integration_head"] == git(repo, "rev-parse", integration(batch)).strip()
    diff = selectors.integration_diff(batch)
    assert sorted(f["path"] for f in diff["summary"]["files"]) == ["a.txt", "b.txt", "c.txt"]
    assert "+b" in diff["text"] and diff["text"].startswith("diff --git")
    assert selectors.merge_conflict_matrix(batch)["pairs"] == []
    assert selectors.integration_take_commands(batch)[-1].endswith(f"git merge {integration(batch)}")
    kinds = set(RunEvent.objects.filter(batch=batch).values_list("kind", flat=True))
    assert {"merge.queued", "merge.merged", "merge.matrix"} <= kinds
    assert checkout_state(repo) == before


def test_a_conflict_is_found_escalated_with_its_hunks_and_resolved_by_keeping_one_side(cluster, sh1, tmp_path):
    repo = new_repo(tmp_path)
    before = checkout_state(repo)
    batch, found = conflicting_batch(repo, tmp_path)
    matrix = selectors.merge_conflict_matrix(batch)
    assert matrix["pairs"] == [{"a": "a", "b": "b", "files": ["README.md"]}]
    assert matrix["checked_pairs"] == 3
    b = found["b"]
    assert b.conflict["files"] == ["README.md"]
    (hunk,) = b.conflict["hunks"]["README.md"]
    assert (hunk["ours"], hunk["theirs"]) == (["from a"], ["from b"])
    escalation = Escalation.objects.get(batch=batch, kind="conflict", state="open")
    assert escalation.run.key == "b" and "README.md" in escalation.reason and "from b" in escalation.reason
    # The queue went on: c merged after b's conflict.
    assert show(repo, integration(batch), "c.txt") == "c\n"
    with pytest.raises(ActionRefused, match="choose ours or theirs for: README.md"):
        services.merge_step_keep_sides(step=b, sides={}, actor=None)
    with pytest.raises(ActionRefused, match="resolved in the merge queue"):
        services.escalation_resolve(escalation=escalation, action="accept", actor=None)
    services.merge_step_keep_sides(step=b, sides={"README.md": "theirs"}, actor=None)
    found = wait_steps(batch, {"a": "merged", "b": "merged", "c": "merged"})
    assert show(repo, integration(batch), "README.md") == "one\nfrom b\nthree\n"
    assert "keeping README.md: theirs" in git(repo, "log", "-1", "--format=%B", found["b"].merge_commit)
    escalation.refresh_from_db()
    assert (escalation.state, escalation.resolution) == ("resolved", "sides")
    assert checkout_state(repo) == before


def test_a_conflict_resolved_by_re_running_the_agent_on_top_of_the_integration_branch(cluster, sh1, tmp_path):
    repo = new_repo(tmp_path)
    batch, found = conflicting_batch(repo, tmp_path)
    head = Workspace.objects.get(batch=batch).integration_head
    attempt = services.merge_step_rerun(step=found["b"], actor=None)
    assert attempt.number == 2 and attempt.start_commit == head
    found = wait_steps(batch, {"a": "merged", "b": "merged", "c": "merged"}, timeout=90)
    attempt.refresh_from_db()
    assert attempt.status == "succeeded" and attempt.base_commit == head
    seen = Path(f"{RunAttempt.objects.get(id=attempt.id).log_path.removesuffix('.log')}.result.json.prompt")
    assert "conflicted with work already merged" in seen.read_text() and "from a" in seen.read_text()
    assert show(repo, integration(batch), "README.md") == "one\nfrom b\nthree\n"
    assert show(repo, integration(batch), "c.txt") == "c\n"
    assert Escalation.objects.get(batch=batch, kind="conflict").resolution == "retried"


def test_a_conflict_resolved_by_hand_in_the_runs_worktree(cluster, sh1, tmp_path):
    repo = new_repo(tmp_path)
    batch, found = conflicting_batch(repo, tmp_path)
    done = services.merge_step_by_hand(step=found["b"], actor=None)
    worktree = Path(done["worktree"])
    assert done["files"] == ["README.md"]
    assert "<<<<<<<" in (worktree / "README.md").read_text()
    assert selectors.merge_queue(batch)["steps"][1]["worktree"] == str(worktree)
    with pytest.raises(ActionRefused, match="conflict markers remain in README.md"):
        services.merge_step_resolved(step=found["b"], actor=None)
    (worktree / "README.md").write_text("one\nfrom a and b\nthree\n")
    services.merge_step_resolved(step=found["b"], actor=None)
    wait_steps(batch, {"a": "merged", "b": "merged", "c": "merged"})
    assert show(repo, integration(batch), "README.md") == "one\nfrom a and b\nthree\n"
    assert Escalation.objects.get(batch=batch, kind="conflict").resolution == "by_hand"


def test_revert_one_merge_then_reset_the_integration_branch(cluster, sh1, tmp_path):
    repo = new_repo(tmp_path)
    before = checkout_state(repo)
    tasks = "".join(f"  - {{key: {k}, prompt: 'echo {k} > {k}.txt'}}\n" for k in "abc")
    batch = wait_batch(launch(spec_text(repo, tasks), tmp_path), timeout=60)
    found = wait_steps(batch, {"a": "merged", "b": "merged", "c": "merged"})
    commit = services.merge_step_revert(step=found["b"], actor=None)
    assert git(repo, "rev-parse", integration(batch)).strip() == commit
    assert show(repo, integration(batch), "b.txt") is None and show(repo, integration(batch), "a.txt") == "a\n"
    assert steps(batch)["b"].state == "reverted"
    with pytest.raises(ActionRefused, match="is reverted in the merge queue"):
        services.merge_step_revert(step=found["b"], actor=None)
    # Taken again: its work comes back (a merge would add nothing: its commits are on the branch).
    services.merge_step_merge(step=found["b"], actor=None)
    again = wait_steps(batch, {"a": "merged", "b": "merged", "c": "merged"})["b"]
    assert show(repo, integration(batch), "b.txt") == "b\n" and again.merge_commit
    assert git(repo, "rev-parse", integration(batch)).strip() == again.merge_commit
    services.merge_reset(batch=batch, actor=None)
    ws = Workspace.objects.get(batch=batch)
    assert git(repo, "rev-parse", integration(batch)).strip() == ws.checkpoint == ws.integration_head
    assert {k: s.state for k, s in steps(batch).items()} == {"a": "reverted", "b": "reverted", "c": "reverted"}
    assert selectors.integration_diff(batch)["summary"]["files"] == []
    services.merge_step_merge(step=found["c"], actor=None)
    wait_steps(batch, {"a": "reverted", "b": "reverted", "c": "merged"})
    assert show(repo, integration(batch), "c.txt") == "c\n" and show(repo, integration(batch), "a.txt") is None
    assert checkout_state(repo) == before


def test_a_gate_failing_on_the_integration_branch_undoes_that_merge(cluster, sh1, tmp_path):
    repo = new_repo(tmp_path)
    tasks = "".join(f"  - {{key: {k}, prompt: 'echo {k} > {k}.txt'}}\n" for k in "abc")
    gate = "  gate: '! (test -f a.txt && test -f b.txt)'\n"
    batch = wait_batch(launch(spec_text(repo, tasks, workspace=gate), tmp_path), timeout=60)
    assert batch.status == "succeeded", [(r.key, r.error) for r in batch.runs.all()]
    found = wait_steps(batch, {"a": "merged", "b": "gate_failed", "c": "merged"})
    assert "gate failed (exit 1)" in found["b"].error
    assert show(repo, integration(batch), "b.txt") is None and show(repo, integration(batch), "c.txt") == "c\n"
    assert len(merges(repo, batch)) == 2
    assert Escalation.objects.get(batch=batch, state="open").kind == "merge_gate"
    services.merge_step_skip(step=found["b"], note="not wanted", actor=None)
    assert steps(batch)["b"].state == "skipped"
    assert Escalation.objects.get(batch=batch, kind="merge_gate").state == "dismissed"


def test_manual_mode_merges_only_what_a_person_picks(cluster, sh1, tmp_path):
    repo = new_repo(tmp_path)
    tasks = "".join(f"  - {{key: {k}, prompt: 'echo {k} > {k}.txt'}}\n" for k in "abc")
    batch = wait_batch(launch(spec_text(repo, tasks, merge="manual"), tmp_path), timeout=60)
    found = wait_steps(batch, {"a": "waiting", "b": "waiting", "c": "waiting"})
    wait_for(lambda: selectors.merge_conflict_matrix(batch), 30, "the pre-check")
    services.merge_step_merge(step=found["b"], actor=None)
    wait_steps(batch, {"a": "waiting", "b": "merged", "c": "waiting"})
    assert show(repo, integration(batch), "b.txt") == "b\n" and show(repo, integration(batch), "a.txt") is None


def test_a_queue_whose_task_was_lost_is_sent_again_by_the_reaper(cluster, sh1, tmp_path, monkeypatch):
    from spawner.engine import merging

    repo = new_repo(tmp_path)
    tasks = "".join(f"  - {{key: {k}, prompt: 'echo {k} > {k}.txt'}}\n" for k in "ab")
    batch = wait_batch(launch(spec_text(repo, tasks, merge="manual"), tmp_path), timeout=60)
    found = wait_steps(batch, {"a": "waiting", "b": "waiting"})
    monkeypatch.setattr(merging, "send", lambda batch_id: None)  # the message is lost on its way
    services.merge_step_merge(step=found["a"], actor=None)
    assert steps(batch)["a"].state == "queued"
    # The cluster's reaper sees a queued step nobody merges for a lease (3 s here) and sends it again.
    wait_steps(batch, {"a": "merged", "b": "waiting"}, timeout=30)


def test_a_race_merges_only_its_winner(cluster, sh1, tmp_path):
    repo = new_repo(tmp_path)
    tasks = (
        "  - {key: fast, prompt: 'echo fast > won.txt'}\n"
        "  - {key: slow1, prompt: 'sleep 30; echo slow1 > won.txt'}\n"
        "  - {key: slow2, prompt: 'sleep 30; echo slow2 > won.txt'}\n"
    )
    batch = wait_batch(launch(spec_text(repo, tasks, aggregation="first_success"), tmp_path), timeout=60)
    assert AgentRun.objects.get(batch=batch, key="fast").status == "succeeded"
    wait_steps(batch, {"fast": "merged"})
    assert show(repo, integration(batch), "won.txt") == "fast\n"


def test_a_race_is_won_by_the_first_run_that_passes_its_gate(cluster, sh1, tmp_path):
    """Best of N decided by the gate: the fastest run fails it, the slower one that passes wins and is
    the only one merged."""
    repo = new_repo(tmp_path)
    tasks = (
        "  - {key: fast, prompt: 'echo fast > won.txt'}\n"
        "  - {key: slow, prompt: 'sleep 2; echo slow > won.txt'}\n"
        "  - {key: slowest, prompt: 'sleep 30; echo slowest > won.txt'}\n"
    )
    gate = '  gate: "grep -q slow won.txt"\n'
    spec = spec_text(repo, tasks, workspace=gate, aggregation="first_success", retries=0)
    batch = wait_batch(launch(spec, tmp_path), timeout=60)
    runs = {r.key: r for r in AgentRun.objects.filter(batch=batch)}
    assert runs["fast"].status == "failed" and "gate" in runs["fast"].error, runs["fast"].error
    assert runs["slow"].status == "succeeded"
    assert runs["slowest"].status == "cancelled"  # the race was won: the loser stopped
    assert selectors.merge_candidates(batch)["winner"] == "slow"
    wait_for(lambda: steps(batch).get("slow") and steps(batch)["slow"].state == "merged", 60, "the winner merged")
    assert [k for k, s in steps(batch).items() if s.state == "merged"] == ["slow"]
    assert show(repo, integration(batch), "won.txt") == "slow\n"


def test_merge_actions_need_the_permission(cluster, sh1, tmp_path, django_user_model):
    repo = new_repo(tmp_path)
    batch = wait_batch(launch(spec_text(repo, "  - {key: a, prompt: 'echo a > a.txt'}\n"), tmp_path), timeout=60)
    found = wait_steps(batch, {"a": "merged"})
    nobody = django_user_model.objects.create_user("nobody")
    with pytest.raises(ActionRefused, match="permission to assign and resolve escalations"):
        services.merge_step_revert(step=found["a"], actor=nobody)
    with pytest.raises(ActionRefused, match="permission"):
        services.merge_reset(batch=batch, actor=nobody)
