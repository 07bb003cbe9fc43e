"""The merge queue on the batch page and best of N: states, the conflict matrix, hunks escaped,
the buttons, refusals; the keep-sides form against real git and a real cluster."""

from __future__ import annotations

import os
import re

import pytest
from django.test import Client

from dashboard.live.topics import BatchTopic, Event
from spawner.engine import merging
from spawner.models import AgentRun, MergeStep, RunAttempt, RunEvent, Workspace
from tests.dashboard.conftest import finish, move
from tests.spawner.test_merging import sh1  # noqa: F401 (a fixture)

STATES = ["queued", "waiting", "merged", "conflict", "resolving", "rerunning", "gate_failed", "skipped", "reverted"]
NINE = "name: nine\nagent: sh\ntasks:\n" + "".join(f"  - {{key: {s}, prompt: 'echo {s}'}}\n" for s in STATES)
EVIL = "<script>alert('x')</script>"
CONFLICT = {
    "files": ["README.md", "<b>odd</b>.txt"],
    "kinds": {"README.md": "content"},
    "hunks": {"README.md": [{"line": 2, "ours": ["from a", EVIL], "theirs": [f"from b {EVIL}"], "text": "..."}]},
    "integration_head": "1" * 40,
    "run_head": "2" * 40,
}
DIFF = (
    "diff --git a/app.py b/app.py\nindex 1..2 100644\n--- a/app.py\n+++ b/app.py\n@@ -1 +1,2 @@\n"
    f'-x = 1\n+x = 2\n+s = "{EVIL}"\n'
    "diff --git a/c.txt b/c.txt\nnew file mode 100644\n--- /dev/null\n+++ b/c.txt\n@@ -0,0 +1 @@\n+c\n"
)


def with_queue(batch, tmp_path, settings, states=None, **ws):
    """Give a finished batch a workspace and a merge step per run (as the queue leaves them)."""
    settings.SPAWNER = {**settings.SPAWNER, "LOG_DIR": tmp_path / "logs"}
    Workspace.objects.create(
        batch=batch,
        repo=str(tmp_path / "repo"),
        checkpoint="c" * 40,
        root=str(tmp_path / "ws"),
        integration_head="d" * 40,
        integration_changes={
            "files": [{"path": "app.py", "added": 2, "removed": 1}, {"path": "c.txt", "added": 1, "removed": 0}],
            "added": 3,
            "removed": 1,
            "changed": 2,
        },
        conflict_matrix={
            "runs": [r.key for r in batch.runs.order_by("order")],
            "pairs": [{"a": "merged", "b": "conflict", "files": ["README.md"]}],
            "integration": {"conflict": ["README.md"]},
            "checked_pairs": 3,
        },
        **ws,
    )
    path = merging.integration_diff_path(batch.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DIFF)
    for i, run in enumerate(batch.runs.order_by("order")):
        state = (states or {}).get(run.key, run.key)
        MergeStep.objects.create(
            batch=batch,
            run=run,
            position=i,
            state=state,
            merge_commit="e" * 40 if state == "merged" else "",
            conflict=CONFLICT if state == "conflict" else None,
        )
    return batch


@pytest.fixture
def nine(make_batch, member, tmp_path, settings):
    batch = make_batch(member, text=NINE)
    for run in batch.runs.all():
        move(move(run, "running"), "succeeded")
    return with_queue(finish(batch), tmp_path, settings)


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_every_state_is_shown_with_words_and_an_icon_and_its_actions(nine, member):
    html = client_for(member).get(f"/batches/{nine.id}/").content.decode()
    assert 'id="merge-section"' in html and "merging.css" in html
    for state, label in [
        ("queued", "queued"),
        ("waiting", "waiting for a person"),
        ("merged", "merged"),
        ("conflict", "conflict"),
        ("resolving", "resolving by hand"),
        ("rerunning", "re-running on top"),
        ("gate_failed", "gate failed"),
        ("skipped", "skipped"),
        ("reverted", "reverted"),
    ]:
        row = html.split(f'data-state="{state}"', 1)[1].split("</tr>", 1)[0]
        assert label in row and 'aria-hidden="true"' in row, state
    merged_row = html.split('data-state="merged"', 1)[1].split("</tr>", 1)[0]
    assert "eeeeeeeeee" in merged_row and ">Revert<" in merged_row and ">Merge<" not in merged_row
    conflict_row = html.split('data-state="conflict"', 1)[1].split("</tr>", 1)[0]
    assert "Re-run on top" in conflict_row and "Resolve by hand" in conflict_row and "Skip" in conflict_row
    assert 'data-needs="resolve launch"' in conflict_row
    assert "Mark resolved" in html.split('data-state="resolving"', 1)[1].split("</tr>", 1)[0]
    assert "<button" not in html.split('data-state="rerunning"', 1)[1].split("</tr>", 1)[0]
    # Every merge button is for people who may resolve (hidden by data-needs for the others).
    section = html.split('id="merge-section"', 1)[1]
    buttons = re.findall(r"<button[^>]*>[^<]*", section)
    assert all('data-needs="resolve' in b for b in buttons if "Keep these sides" not in b), buttons
    assert 'data-needs="resolve"><button class="primary">Keep these sides' in section
    # The reset, the matrix (runs x runs and against the integration head), the diff and its commands.
    assert "Reset integration branch" in section
    matrix = section.split('class="grid matrix"', 1)[1].split("</table>", 1)[0]
    assert matrix.count("README.md") == 3  # merged x conflict, conflict x merged, conflict x integration head
    assert "integration head at queue start" in matrix
    assert "+3" in section and "app.py" in section and f"spawner/{nine.id}/integration" in section
    assert f"git merge spawner/{nine.id}/integration" in section


def test_conflict_hunks_and_diffs_are_escaped_and_highlighted(nine, member):
    html = client_for(member).get(f"/batches/{nine.id}/").content.decode()
    assert EVIL not in html and "<b>odd</b>" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    conflict = html.split('class="conflict-box"', 1)[1]
    assert "from a" in conflict and "from b" in conflict and "ours" in conflict and "theirs" in conflict
    assert 'type="radio" name="side:README.md" value="theirs"' in conflict
    assert "&lt;b&gt;odd&lt;/b&gt;" in conflict
    # The integration diff: lines classed add/del, code tokens from Pygments, escaped.
    diff = html.split('class="integration-diff"', 1)[1]
    assert '<span class="dl d-add">' in diff and '<span class="dl d-del">' in diff
    assert 'class="mi"' in diff or 'class="m"' in diff  # the number 2 in app.py


def test_a_batch_without_a_workspace_has_no_merge_section(make_batch, member):
    batch = make_batch(member)
    assert "merge-section" not in client_for(member).get(f"/batches/{batch.id}/").content.decode()


def test_a_merge_action_posted_calls_the_service(nine, member):
    step = MergeStep.objects.get(batch=nine, state="waiting")
    response = client_for(member).post(f"/merge-steps/{step.id}/", {"action": "skip"}, headers={"HX-Request": "true"})
    assert response.status_code == 200 and "skipped" in response.content.decode()
    step.refresh_from_db()
    assert step.state == "skipped" and step.acted_by == member
    assert RunEvent.objects.filter(batch=nine, kind="merge.skipped", run=step.run).exists()
    # Not allowed in this state: a notice (409), not an error.
    response = client_for(member).post(f"/merge-steps/{step.id}/", {"action": "revert"}, headers={"HX-Request": "true"})
    assert response.status_code == 409 and "is skipped in the merge queue" in response.content.decode()
    assert client_for(member).post(f"/merge-steps/{step.id}/", {"action": "nonsense"}).status_code == 302


def test_people_without_the_permission_see_the_state_and_are_refused(nine, viewer, launcher, reviewer):
    html = client_for(viewer).get(f"/batches/{nine.id}/").content.decode()
    assert "waiting for a person" in html and 'data-may=""' in html  # buttons hidden by data-needs
    step = MergeStep.objects.get(batch=nine, state="waiting")
    conflict = MergeStep.objects.get(batch=nine, state="conflict")
    events = RunEvent.objects.count()
    for user in (viewer, launcher):
        c = client_for(user)
        r = c.post(f"/merge-steps/{step.id}/", {"action": "merge"}, headers={"HX-Request": "true"})
        assert r.status_code == 403 and "permission" in r.content.decode()
        assert c.post(f"/merge-steps/{step.id}/", {"action": "merge"}).status_code == 403
        sides = {"side:README.md": "ours", "side:<b>odd</b>.txt": "ours"}
        assert c.post(f"/merge-steps/{conflict.id}/sides/", sides).status_code == 403
        assert c.post(f"/batches/{nine.id}/merge/reset/").status_code == 403
    # A reviewer may resolve but not launch: no re-run on top.
    r = client_for(reviewer).post(f"/merge-steps/{conflict.id}/", {"action": "rerun"}, headers={"HX-Request": "true"})
    assert r.status_code == 403 and "launch" in r.content.decode()
    assert RunEvent.objects.count() == events
    assert MergeStep.objects.get(id=step.id).state == "waiting"


def test_keep_sides_refuses_an_incomplete_choice(nine, member):
    conflict = MergeStep.objects.get(batch=nine, state="conflict")
    r = client_for(member).post(
        f"/merge-steps/{conflict.id}/sides/", {"side:README.md": "theirs"}, headers={"HX-Request": "true"}
    )
    assert r.status_code == 409 and "hoose ours or theirs for: &lt;b&gt;odd&lt;/b&gt;.txt" in r.content.decode()


def test_merge_events_update_the_section_live(nine):
    topic = BatchTopic(nine.id)
    step = MergeStep.objects.get(batch=nine, state="waiting")
    topic.collect(Event(id=1, batch_id=nine.id, run_id=step.run_id, kind="merge.queued"))
    assert topic.merge and topic.due(10.0)
    html = "".join(topic.take(10.0))
    assert 'id="merge-section"' in html and "waiting for a person" in html
    topic.collect(Event(id=2, batch_id=nine.id, run_id=step.run_id, kind="run.output"))
    assert 'id="merge-section"' not in "".join(topic.take(20.0))
    assert 'id="merge-section"' in topic.snapshot()[0]


# --- best of N ------------------------------------------------------------------------------

RACE = """\
name: race
agent: sh
aggregation: {aggregation}
tasks:
  - {{key: one, prompt: "echo one"}}
  - {{key: two, prompt: "echo two"}}
  - {{key: three, prompt: "echo three"}}
"""


@pytest.fixture
def race(make_batch, member, tmp_path, settings):
    batch = make_batch(member, text=RACE.format(aggregation="vote"))
    for run in batch.runs.order_by("order"):
        run = move(move(run, "running"), "failed" if run.key == "three" else "succeeded")
        log = tmp_path / f"{run.key}.1.log"
        log.write_text("log\n")
        (tmp_path / f"{run.key}.1.diff").write_text(
            f"diff --git a/won.txt b/won.txt\n--- a/won.txt\n+++ b/won.txt\n@@ -1 +1 @@\n-x\n+{run.key} {EVIL}\n"
        )
        RunAttempt.objects.filter(run=run).update(log_path=str(log))
        changes = {"files": [{"path": "won.txt", "added": 1, "removed": 1}], "added": 1, "removed": 1, "changed": 1}
        AgentRun.objects.filter(id=run.id).update(changes=changes)
        if run.key == "one":
            usage = {"input_tokens": 1200, "output_tokens": 300, "cost_usd": 0.0421, "source": "claude-json"}
            AgentRun.objects.filter(id=run.id).update(usage=usage, cost_usd=0.0421)
        RunEvent.objects.create(
            batch=batch, run=run, attempt=1, kind="run.gate", data={"exit_code": 1 if run.key == "three" else 0}
        )
    batch = finish(batch)
    with_queue(batch, tmp_path, settings, states={"one": "merged", "two": "conflict", "three": "skipped"}, gate="true")
    MergeStep.objects.filter(run__key="three", batch=batch).delete()
    return batch


def test_the_candidates_side_by_side(race, member):
    html = client_for(member).get(f"/batches/{race.id}/candidates/").content.decode()
    assert "Best of 3" in html and EVIL not in html
    for key in ("one", "two", "three"):
        assert f'id="candidate-{AgentRun.objects.get(batch=race, key=key).id}"' in html
    one = html.split('id="candidate-')[1]
    assert "passed" in one and "+1" in one and "one &lt;script&gt;" in one and "Pick one" in one
    assert "$0.0421" in one and "1.5k tok" in one  # cost and tokens beside duration and diff size
    three = html.split('id="candidate-')[3]
    assert "failed (exit 1)" in three and "Pick three" not in three
    # Linked from the batch page.
    assert f"/batches/{race.id}/candidates/" in client_for(member).get(f"/batches/{race.id}/").content.decode()


def test_picking_a_winner_skips_the_others(race, member, viewer):
    two = AgentRun.objects.get(batch=race, key="two")
    url = f"/batches/{race.id}/candidates/{two.id}/pick/"
    assert client_for(viewer).post(url, headers={"HX-Request": "true"}).status_code == 403
    three = AgentRun.objects.get(batch=race, key="three")
    r = client_for(member).post(f"/batches/{race.id}/candidates/{three.id}/pick/", headers={"HX-Request": "true"})
    assert r.status_code == 409 and "only a succeeded run" in r.content.decode()
    # 'one' is merged: picking 'two' resets the integration branch (real git needed), so here 'one' is
    # only queued and 'two' waits.
    MergeStep.objects.filter(batch=race, run__key="one").update(state="queued", merge_commit="")
    MergeStep.objects.filter(batch=race, run__key="two").update(state="waiting")
    r = client_for(member).post(url, headers={"HX-Request": "true"})
    assert r.status_code == 200 and "Picked &#x27;two&#x27;" in r.content.decode(), r.content
    states = dict(MergeStep.objects.filter(batch=race).values_list("run__key", "state"))
    assert states == {"one": "skipped", "two": "queued"}


def test_a_batch_without_worktrees_has_no_candidates(make_batch, member):
    batch = make_batch(member)
    assert client_for(member).get(f"/batches/{batch.id}/candidates/").status_code == 404


# --- against real git and a real cluster -----------------------------------------------------


@pytest.mark.integration
@pytest.mark.usefixtures("sh1")
def test_the_keep_sides_form_resolves_a_real_conflict(cluster, tmp_path, member, viewer):
    from tests.spawner.test_merging import conflicting_batch, integration, new_repo, show, wait_steps

    repo = new_repo(tmp_path)
    batch, found = conflicting_batch(repo, tmp_path)
    page = client_for(member).get(f"/batches/{batch.id}/").content.decode()
    assert "from a" in page.split('class="conflict-box"', 1)[1] and 'name="side:README.md"' in page
    url = f"/merge-steps/{found['b'].id}/sides/"
    assert client_for(viewer).post(url, {"side:README.md": "ours"}).status_code == 403
    response = client_for(member).post(url, {"side:README.md": "theirs"}, headers={"HX-Request": "true"})
    assert response.status_code == 200, response.content
    wait_steps(batch, {"a": "merged", "b": "merged", "c": "merged"})
    assert show(repo, integration(batch), "README.md") == "one\nfrom b\nthree\n"
    page = client_for(member).get(f"/batches/{batch.id}/").content.decode()
    assert "kept README.md: theirs" in page and 'class="conflict-box"' not in page
    assert "+from b" in page.split('class="integration-diff"', 1)[1]


@pytest.mark.integration
@pytest.mark.usefixtures("sh1")
def test_picking_a_candidate_when_another_is_merged_resets_then_merges_it(cluster, tmp_path, member):
    from tests.spawner.test_merging import conflicting_batch, integration, new_repo, show, wait_steps

    repo = new_repo(tmp_path)
    batch, found = conflicting_batch(repo, tmp_path)  # a merged, b in conflict with it, c merged
    url = f"/batches/{batch.id}/candidates/{found['b'].run_id}/pick/"
    response = client_for(member).post(url, headers={"HX-Request": "true"})
    text = response.content.decode()
    assert response.status_code == 200 and "reset the integration branch" in text, text
    wait_steps(batch, {"a": "skipped", "b": "merged", "c": "skipped"})
    assert show(repo, integration(batch), "README.md") == "one\nfrom b\nthree\n"
    assert show(repo, integration(batch), "c.txt") is None


def test_the_section_shows_the_disk_the_batchs_worktrees_use(nine, member, tmp_path):
    page = f"/batches/{nine.id}/"
    assert "worktrees on disk: none left" in client_for(member).get(page).content.decode()
    tree = tmp_path / "wt-a"
    tree.mkdir()
    (tree / "big.bin").write_bytes(os.urandom(300_000))  # not compressible
    RunAttempt.objects.filter(run__batch=nine, run__key="merged").update(worktree=str(tree))
    html = client_for(member).get(page).content.decode()
    shown = re.search(r"worktrees on disk: ([\d.]+)\xa0KB", html)
    assert shown and 290 <= float(shown.group(1)) <= 320, html.split('class="disk"', 1)[1][:400]


def test_a_batch_of_worktrees_without_a_merge_queue_shows_their_disk_in_its_workspace_card(nine, member, tmp_path):
    page = f"/batches/{nine.id}/"
    assert 'id="workspace-disk"' not in client_for(member).get(page).content.decode()  # the merge section has it
    Workspace.objects.filter(batch=nine).update(merge_mode="none")
    tree = tmp_path / "wt-alone"
    tree.mkdir()
    (tree / "big.bin").write_bytes(os.urandom(200_000))
    RunAttempt.objects.filter(run__batch=nine, run__key="merged").update(worktree=str(tree))
    html = client_for(member).get(page).content.decode()
    card = html.split('id="workspace-disk"', 1)[1][:600]
    shown = re.search(r"([\d.]+)\xa0KB", card)
    assert shown and 190 <= float(shown.group(1)) <= 220, card
