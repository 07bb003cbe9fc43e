"""The merge queue and best of N through the REST API: the same services, permissions and refusals as
the batch page's merge section and the candidates page (tests/dashboard/test_merge_pages.py); the
git work against real git and a real cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.test import Client

from spawner.models import AgentRun, Escalation, MergeStep, RunEvent
from tests.api.conftest import Api
from tests.api.test_api import is_problem
from tests.dashboard.test_merge_pages import CONFLICT
from tests.spawner.test_merging import sh1  # noqa: F401 (a fixture)

SIDES = {"README.md": "theirs", "<b>odd</b>.txt": "ours"}


def step_of(batch, state: str) -> MergeStep:
    return MergeStep.objects.select_related("run").get(batch=batch, run__key=state)


def urls(batch) -> dict[str, tuple[str, str, dict | None]]:
    """Every merge endpoint of this batch: name -> (method, path, body)."""
    waiting, conflict = step_of(batch, "waiting"), step_of(batch, "conflict")
    run = waiting.run_id
    return {
        "merge": ("get", f"/batches/{batch.id}/merge", None),
        "candidates": ("get", f"/batches/{batch.id}/candidates", None),
        "step-merge": ("post", f"/merge-steps/{waiting.id}/merge", None),
        "step-skip": ("post", f"/merge-steps/{waiting.id}/skip", None),
        "keep-sides": ("post", f"/merge-steps/{conflict.id}/keep-sides", {"sides": SIDES}),
        "rerun": ("post", f"/merge-steps/{conflict.id}/rerun", None),
        "by-hand": ("post", f"/merge-steps/{conflict.id}/by-hand", None),
        "resolved": ("post", f"/merge-steps/{step_of(batch, 'resolving').id}/resolved", None),
        "revert": ("post", f"/merge-steps/{step_of(batch, 'merged').id}/revert", None),
        "reset": ("post", f"/batches/{batch.id}/merge/reset", None),
        "pick": ("post", f"/batches/{batch.id}/candidates/{run}/pick", None),
    }


def call(api: Api, method: str, path: str, body=None):
    if method == "get":
        return api.get(path)
    return api.post(path, body if body is not None else {})


def states(batch) -> dict[str, str]:
    return dict(MergeStep.objects.filter(batch=batch).values_list("run__key", "state"))


def page_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- who may call ----------------------------------------------------------------------------


def test_without_a_token_every_merge_endpoint_is_a_401_problem(nine):
    before = (states(nine), RunEvent.objects.count())
    for name, (method, path, body) in urls(nine).items():
        response = call(Api(), method, path, body)
        assert response.status_code == 401, name
        assert "token" in is_problem(response, 401)["detail"]
    assert (states(nine), RunEvent.objects.count()) == before


def test_a_read_token_reads_the_queue_and_changes_nothing(nine, member, api_as):
    api = api_as(member, "read")
    before = (states(nine), RunEvent.objects.count())
    for name, (method, path, body) in urls(nine).items():
        response = call(api, method, path, body)
        if method == "get":
            assert response.status_code == 200, (name, response.content[:300])
        else:
            assert "scope is read" in is_problem(response, 403)["detail"], name
    assert (states(nine), RunEvent.objects.count()) == before


def test_another_users_batch_is_refused_as_in_the_browser(nine, viewer, teammate, launcher, reviewer, api_as):
    """The batch is mia's. Batches are not hidden from others (the browser shows everyone's), so they
    read it; acting on its queue needs the permission to resolve escalations (a re-run on top also
    the one to launch): a 403, as the page's buttons answer the same person. Nothing changes."""
    before = (states(nine), RunEvent.objects.count(), Escalation.objects.count())
    page = {
        "step-merge": lambda s: (f"/merge-steps/{s['waiting']}/", {"action": "merge"}),
        "step-skip": lambda s: (f"/merge-steps/{s['waiting']}/", {"action": "skip"}),
        "keep-sides": lambda s: (f"/merge-steps/{s['conflict']}/sides/", {f"side:{k}": v for k, v in SIDES.items()}),
        "rerun": lambda s: (f"/merge-steps/{s['conflict']}/", {"action": "rerun"}),
        "by-hand": lambda s: (f"/merge-steps/{s['conflict']}/", {"action": "by_hand"}),
        "resolved": lambda s: (f"/merge-steps/{s['resolving']}/", {"action": "resolved"}),
        "revert": lambda s: (f"/merge-steps/{s['merged']}/", {"action": "revert"}),
        "reset": lambda s: (f"/batches/{nine.id}/merge/reset/", {}),
        "pick": lambda s: (f"/batches/{nine.id}/candidates/{s['waiting_run']}/pick/", {}),
    }
    ids = {key: step_of(nine, key).id for key in ("waiting", "conflict", "resolving", "merged")}
    ids["waiting_run"] = step_of(nine, "waiting").run_id
    for user in (viewer, teammate, launcher):
        api = api_as(user)
        for name, (method, path, body) in urls(nine).items():
            response = call(api, method, path, body)
            if method == "get":
                assert response.status_code == 200, (user, name)  # as the batch page shows it to them
                continue
            assert "permission to assign and resolve" in is_problem(response, 403)["detail"], (user, name)
            url, form = page[name](ids)
            browser = page_client(user).post(url, form, headers={"HX-Request": "true"})
            assert browser.status_code == 403, (user, name, browser.status_code)
    # May resolve, may not launch: no re-run on top, in the API as on the page.
    body = is_problem(api_as(reviewer).post(f"/merge-steps/{ids['conflict']}/rerun", {}), 403)
    assert "launch" in body["detail"]
    browser = page_client(reviewer).post(*page["rerun"](ids), headers={"HX-Request": "true"})
    assert browser.status_code == 403
    assert (states(nine), RunEvent.objects.count(), Escalation.objects.count()) == before
    # Not the owner, but allowed to resolve: the browser lets them work the nine, and so does the API.
    response = api_as(reviewer).post(f"/merge-steps/{ids['waiting']}/skip", {})
    assert response.status_code == 200, response.content
    assert step_of(nine, "waiting").acted_by.username == "rey"


# --- reading the queue -------------------------------------------------------------------------


def test_the_queue_its_matrix_the_integration_branch_and_the_commands_to_take_it(nine, viewer, api_as):
    api = api_as(viewer, "read")
    body = api.get(f"/batches/{nine.id}/merge").json()
    assert body["batch"] == nine.id and body["mode"] == "sequential"
    assert body["integration_branch"] == f"spawner/{nine.id}/integration" and body["integration_head"] == "d" * 40
    steps = {s["key"]: s for s in body["steps"]}
    assert {k: s["state"] for k, s in steps.items()} == {k: k for k in steps} and len(steps) == 9
    assert steps["waiting"]["actions"] == ["merge", "skip"] and steps["rerunning"]["actions"] == []
    assert steps["merged"]["merge_commit"] == "e" * 40
    conflict = steps["conflict"]
    assert conflict["conflict_files"] == CONFLICT["files"] and conflict["hunks"]["README.md"][0]["line"] == 2
    assert set(conflict["actions"]) == {"keep_sides", "rerun", "by_hand", "skip"}
    assert body["counts"] == {k: 1 for k in steps}
    assert body["matrix"]["pairs"] == [{"a": "merged", "b": "conflict", "files": ["README.md"]}]
    assert body["matrix"]["integration"] == {"conflict": ["README.md"]} and body["matrix"]["checked_pairs"] == 3
    assert body["integration"]["summary"]["added"] == 3 and "diff --git a/app.py" in body["integration"]["diff"]
    assert body["take_commands"][-1].endswith(f"/repo && git merge spawner/{nine.id}/integration")
    assert body["candidates_url"] == f"/api/batches/{nine.id}/candidates"
    lean = api.get(f"/batches/{nine.id}/merge", diff="false").json()
    assert lean["integration"]["diff"] == "" and lean["integration"]["summary"]["changed"] == 2


def test_a_batch_without_a_merge_queue_or_worktrees_is_a_404(make_batch, member, api_as):
    batch = make_batch(member)
    api = api_as(member, "read")
    assert "no merge queue" in is_problem(api.get(f"/batches/{batch.id}/merge"), 404)["detail"]
    assert "worktrees" in is_problem(api.get(f"/batches/{batch.id}/candidates"), 404)["detail"]
    is_problem(api.get("/batches/999999/merge"), 404)
    is_problem(api_as(member).post("/merge-steps/999999/skip", {}), 404)
    is_problem(api_as(member).post(f"/merge-steps/{2**63}/skip", {}), 404)  # past what the database holds
    is_problem(api.get(f"/batches/{2**63}/candidates"), 404)
    is_problem(api_as(member).post(f"/batches/{batch.id}/merge/reset", {}), 409)  # as the page: a refusal


def test_the_candidates_side_by_side(race, viewer, api_as):
    body = api_as(viewer, "read").get(f"/batches/{race.id}/candidates").json()
    assert body["aggregation"] == "vote" and body["gate"] is True
    found = {c["key"]: c for c in body["candidates"]}
    assert list(found) == ["one", "two", "three"]
    assert found["one"]["gate"] is True and found["three"]["gate"] is False and found["three"]["gate_exit"] == 1
    assert found["one"]["cost_usd"] == pytest.approx(0.0421) and found["one"]["usage"]["input_tokens"] == 1200
    assert "+one <script>" in found["one"]["diff"]  # JSON: the raw text, for the client to escape
    assert found["one"]["step"]["state"] == "merged" and found["three"]["step"] is None


# --- refusals --------------------------------------------------------------------------------


def test_a_refused_action_is_a_problem_naming_what_the_step_allows(nine, member, api_as, make_batch):
    api = api_as(member)
    waiting, conflict = step_of(nine, "waiting"), step_of(nine, "conflict")
    before = (states(nine), RunEvent.objects.count())
    events = RunEvent.objects.filter(batch=nine).count()
    body = is_problem(api.post(f"/merge-steps/{waiting.id}/revert", {}), 409)
    assert body["type"] == "/api/problems/refused"
    assert body["detail"] == "run 'waiting' is waiting in the merge queue; you may: merge, skip"
    body = is_problem(api.post(f"/merge-steps/{step_of(nine, 'rerunning').id}/skip", {}), 409)
    assert "you may: nothing until it changes" in body["detail"]
    # The same words the page gives for the same refusal.
    page = page_client(member).post(f"/merge-steps/{waiting.id}/", {"action": "revert"}, headers={"HX-Request": "true"})
    assert page.status_code == 409 and "is waiting in the merge queue" in page.content.decode()
    # Keeping sides: an incomplete or unknown choice is the service's refusal (409, as on the page) ...
    body = is_problem(api.post(f"/merge-steps/{conflict.id}/keep-sides", {"sides": {"README.md": "theirs"}}), 409)
    assert "choose ours or theirs for: <b>odd</b>.txt" in body["detail"]
    sides = {**SIDES, "other.txt": "ours"}
    assert (
        "not a conflicting file: other.txt"
        in is_problem(api.post(f"/merge-steps/{conflict.id}/keep-sides", {"sides": sides}), 409)["detail"]
    )
    # ... a side that is neither, or no choice at all, a 422 naming the field.
    body = is_problem(api.post(f"/merge-steps/{conflict.id}/keep-sides", {"sides": {"README.md": "mine"}}), 422)
    assert body["errors"][0]["field"].endswith("sides.README.md") and "ours" in body["errors"][0]["message"]
    assert "sides" in is_problem(api.post(f"/merge-steps/{conflict.id}/keep-sides", {}), 422)["detail"]
    is_problem(api.post(f"/merge-steps/{conflict.id}/keep-sides", "{not json", content_type="text/plain"), 400)
    # Best of N: a failed run is not picked; a run of another batch is not found there.
    failed = AgentRun.objects.get(batch=nine, key="rerunning")
    AgentRun.objects.filter(id=failed.id).update(status="failed")
    body = is_problem(api.post(f"/batches/{nine.id}/candidates/{failed.id}/pick"), 409)
    assert "only a succeeded run" in body["detail"]
    other = make_batch(member).runs.first()
    is_problem(api.post(f"/batches/{nine.id}/candidates/{other.id}/pick"), 404)
    assert states(nine) == before[0] and RunEvent.objects.filter(batch=nine).count() == events


# --- happy paths without git -----------------------------------------------------------------


def test_merge_skip_keep_sides_and_rerun_through_the_api(nine, member, api_as):
    api = api_as(member)
    waiting, conflict, gate = step_of(nine, "waiting"), step_of(nine, "conflict"), step_of(nine, "gate_failed")
    response = api.post(f"/merge-steps/{waiting.id}/merge", {})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["detail"] == "'waiting' is queued to merge."
    assert body["step"]["state"] == "queued" and body["step"]["acted_by"] == "mia"
    assert RunEvent.objects.filter(batch=nine, run=waiting.run, kind="merge.queued").exists()

    response = api.post(f"/merge-steps/{waiting.id}/skip", {})
    assert response.status_code == 200 and response.json()["step"]["state"] == "skipped"

    response = api.post(f"/merge-steps/{conflict.id}/keep-sides", {"sides": SIDES})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["step"]["state"] == "queued" and body["step"]["resolution"] == {"sides": SIDES}
    assert "Keeping <b>odd</b>.txt: ours, README.md: theirs" in body["detail"]

    response = api.post(f"/merge-steps/{gate.id}/rerun", {})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["attempt"] == 2 and body["step"]["state"] == "rerunning"
    assert AgentRun.objects.get(id=gate.run_id).attempt == 2
    changed = {"waiting": "skipped", "conflict": "queued", "gate_failed": "rerunning"}
    assert states(nine) == {**{k: k for k in states(nine)}, **changed}


def test_picking_a_candidate_through_the_api(race, member, api_as):
    # As on the page (tests/dashboard/test_merge_pages.py): 'one' queued, 'two' waiting; picking 'two'
    # skips 'one' and queues 'two'.
    MergeStep.objects.filter(batch=race, run__key="one").update(state="queued", merge_commit="")
    MergeStep.objects.filter(batch=race, run__key="two").update(state="waiting")
    two = AgentRun.objects.get(batch=race, key="two")
    response = api_as(member).post(f"/batches/{race.id}/candidates/{two.id}/pick")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["done"] == ["skipped 'one'", "queued 'two' to merge"]
    assert body["detail"] == "Picked 'two': skipped 'one'; queued 'two' to merge."
    assert states(race) == {"one": "skipped", "two": "queued"}


def test_the_schema_describes_the_merge_endpoints(api_as, viewer):
    schema = api_as(viewer, "read").get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/api/batches/{batch_id}/merge",
        "/api/batches/{batch_id}/merge/reset",
        "/api/batches/{batch_id}/candidates",
        "/api/batches/{batch_id}/candidates/{run_id}/pick",
        "/api/merge-steps/{step_id}/merge",
        "/api/merge-steps/{step_id}/skip",
        "/api/merge-steps/{step_id}/keep-sides",
        "/api/merge-steps/{step_id}/rerun",
        "/api/merge-steps/{step_id}/by-hand",
        "/api/merge-steps/{step_id}/resolved",
        "/api/merge-steps/{step_id}/revert",
    ):
        assert path in paths, path
        for operation in paths[path].values():
            assert {"401", "403", "404"} <= set(operation["responses"]), path
            if "post" in paths[path]:
                assert "409" in operation["responses"], path
    sides = json.dumps(schema["components"]["schemas"]["KeepSidesIn"])
    assert '"ours"' in sides and '"theirs"' in sides


# --- against real git and a real cluster -----------------------------------------------------


@pytest.mark.integration
@pytest.mark.usefixtures("sh1")
def test_a_conflict_resolved_by_hand_then_reverted_and_reset_through_the_api(cluster, tmp_path, member, api_as):
    from tests.spawner.test_merging import conflicting_batch, integration, new_repo, show, wait_steps

    repo = new_repo(tmp_path)
    batch, found = conflicting_batch(repo, tmp_path)  # a merged, b in conflict with it, c merged
    api = api_as(member)
    shown = api.get(f"/batches/{batch.id}/merge").json()
    assert shown["matrix"]["pairs"] == [{"a": "a", "b": "b", "files": ["README.md"]}]
    b = next(s for s in shown["steps"] if s["key"] == "b")
    assert b["state"] == "conflict" and b["hunks"]["README.md"][0]["theirs"] == ["from b"]
    assert f"git merge {integration(batch)}" in shown["take_commands"][-1]

    response = api.post(f"/merge-steps/{b['id']}/by-hand")
    assert response.status_code == 200, response.content
    done = response.json()
    worktree = Path(done["worktree"])
    assert done["files"] == ["README.md"] and done["step"]["state"] == "resolving"
    assert done["step"]["worktree"] == str(worktree) and "<<<<<<<" in (worktree / "README.md").read_text()
    assert f"/api/merge-steps/{b['id']}/resolved" in done["detail"]
    body = is_problem(api.post(f"/merge-steps/{b['id']}/resolved"), 409)
    assert "conflict markers remain in README.md" in body["detail"]
    (worktree / "README.md").write_text("one\nfrom a and b\nthree\n")
    response = api.post(f"/merge-steps/{b['id']}/resolved")
    assert response.status_code == 200, response.content
    assert len(response.json()["commit"]) == 40 and response.json()["step"]["state"] == "queued"
    wait_steps(batch, {"a": "merged", "b": "merged", "c": "merged"})
    assert show(repo, integration(batch), "README.md") == "one\nfrom a and b\nthree\n"
    assert Escalation.objects.get(batch=batch, kind="conflict").resolution == "by_hand"

    c = found["c"]
    response = api.post(f"/merge-steps/{c.id}/revert")
    assert response.status_code == 200, response.content
    assert response.json()["step"]["revert_commit"] == response.json()["commit"]
    assert show(repo, integration(batch), "c.txt") is None
    is_problem(api.post(f"/merge-steps/{c.id}/revert"), 409)

    response = api.post(f"/batches/{batch.id}/merge/reset")
    assert response.status_code == 200, response.content
    reset = response.json()["queue"]
    assert {s["key"]: s["state"] for s in reset["steps"]} == {"a": "reverted", "b": "reverted", "c": "reverted"}
    assert reset["integration_head"] == reset["checkpoint"]
    assert show(repo, integration(batch), "README.md") == "one\ntwo\nthree\n"


@pytest.mark.integration
@pytest.mark.usefixtures("sh1")
def test_a_conflict_resolved_by_keeping_a_side_or_re_running_on_top_through_the_api(cluster, tmp_path, member, api_as):
    from tests.spawner.test_merging import conflicting_batch, integration, new_repo, show, wait_steps

    repo = new_repo(tmp_path)
    batch, found = conflicting_batch(repo, tmp_path)
    api = api_as(member)
    response = api.post(f"/merge-steps/{found['b'].id}/keep-sides", {"sides": {"README.md": "theirs"}})
    assert response.status_code == 200, response.content
    wait_steps(batch, {"a": "merged", "b": "merged", "c": "merged"})
    assert show(repo, integration(batch), "README.md") == "one\nfrom b\nthree\n"
    # Another batch with the same conflict: 'b' re-run on top of the integration branch this time.
    batch, found = conflicting_batch(repo, tmp_path)
    response = api.post(f"/merge-steps/{found['b'].id}/rerun")
    assert response.status_code == 200, response.content
    assert response.json()["attempt"] == 2 and response.json()["step"]["state"] == "rerunning"
    wait_steps(batch, {"a": "merged", "b": "merged", "c": "merged"}, timeout=90)
    assert show(repo, integration(batch), "README.md") == "one\nfrom b\nthree\n"
    assert Escalation.objects.get(batch=batch, kind="conflict").resolution == "retried"
