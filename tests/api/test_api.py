"""The REST API: who may call what, problem details, idempotent launches, pagination, the schema."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from django.urls import get_resolver, reverse
from django.utils import timezone
from openapi_spec_validator import validate

from spawner import services
from spawner.models import AgentRun, ApiToken, Batch, Escalation, RunAttempt
from tests.api.conftest import Api
from tests.dashboard.test_access import walk

GOOD = {"name": "api", "agent": "sh", "tasks": [{"key": "a", "prompt": "echo a"}, {"key": "b", "prompt": "echo b"}]}

API_URLS = sorted((name, route) for name, route in walk(get_resolver().url_patterns) if name.startswith("api-1:"))
POSTS = {
    "api-1:batch-launch",
    "api-1:batch-plan",
    "api-1:batch-cancel",
    "api-1:batch-retry-failed",
    "api-1:batch-rerun",
    "api-1:review-submit",
    "api-1:run-retry",
    "api-1:run-cancel",
    "api-1:escalation-assign",
    "api-1:escalation-resolve",
    "api-1:template-launch",
    "api-1:template-create",
    "api-1:schedule-create",
    "api-1:schedule-pause",
    "api-1:schedule-resume",
    # The merge queue and best of N (tests/api/test_merge_api.py).
    "api-1:merge-step-merge",
    "api-1:merge-step-skip",
    "api-1:merge-step-keep-sides",
    "api-1:merge-step-rerun",
    "api-1:merge-step-by-hand",
    "api-1:merge-step-resolved",
    "api-1:merge-step-revert",
    "api-1:merge-reset",
    "api-1:merge-pick",
}
METHODS = {"api-1:template-update": "put", "api-1:template-delete": "delete", "api-1:schedule-delete": "delete"}
WRITES = POSTS | set(METHODS)
# Reads for admins only (a token of scope admin): tests/dashboard/test_clusters.py checks them.
ADMIN_GETS = {"api-1:clusters"}
# Reads of a batch's merge queue (a 404 for this file's batch, which has none): tests/api/test_merge_api.py.
MERGE_GETS = {"api-1:batch-merge", "api-1:merge-candidates"}


def is_problem(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"] == "application/problem+json"
    body = json.loads(response.content)
    assert {"type", "title", "status", "detail"} <= set(body) and body["status"] == status and body["detail"]
    return body


@pytest.fixture
def ids(reviewed):
    run = reviewed.runs.get(key="critical")
    template = services.template_save(
        actor=reviewed.owner, name="api", spec_text="name: x\nagent: sh\ntasks: [{key: a, prompt: echo a}]"
    )
    return {
        "batch_id": reviewed.id,
        "run_id": run.id,
        "escalation_id": Escalation.objects.get(batch=reviewed).id,
        "template_id": template.id,
        "schedule_id": services.schedule_create(template=template, cron="0 3 * * *", actor=reviewed.owner).id,
        # No merge step: the token is checked before the step is looked up (a 401, or a read token's 403).
        "step_id": 999_999,
    }


def url_of(route: str, ids: dict) -> str:
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(ids[m.group(1)]), route)


# --- authentication ---------------------------------------------------------------------------


def test_every_api_url_is_known_here():
    names = {name for name, _ in API_URLS}
    assert names >= POSTS
    assert len(names) >= 20


@pytest.mark.parametrize(("name", "route"), API_URLS)
def test_every_endpoint_needs_a_token(ids, name, route, token_for, member):
    url = url_of(route, ids)
    client = Client()

    def call(headers):
        if name in WRITES:
            method = getattr(client, METHODS.get(name, "post"))
            return method(url, "{}", content_type="application/json", headers=headers)
        return client.get(url, headers=headers)

    for headers in ({}, {"Authorization": "Bearer spn_not-a-token"}, {"Authorization": "Basic bWlhOnB3"}):
        response = call(headers)
        body = is_problem(response, 401)
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert "token" in body["detail"]
    # A revoked or expired token is no token.
    revoked = token_for(member)
    services.token_revoke(token_id=ApiToken.objects.get(digest=services.token_digest(revoked)).id, user=member)
    expired = token_for(member)
    ApiToken.objects.filter(digest=services.token_digest(expired)).update(expires_at=timezone.now())
    for secret in (revoked, expired):
        is_problem(call({"Authorization": f"Bearer {secret}"}), 401)


@pytest.mark.parametrize(("name", "route"), [u for u in API_URLS if u[0] not in WRITES | ADMIN_GETS | MERGE_GETS])
def test_every_read_answers_a_read_token(ids, name, route, api_as, viewer, settings, tmp_path):
    log = tmp_path / "critical.log"
    log.write_bytes(b"line one\nline two\n")
    RunAttempt.objects.filter(run_id=ids["run_id"]).update(log_path=str(log))
    response = api_as(viewer, "read").client.get(url_of(route, ids), headers=api_as(viewer, "read").headers)
    assert response.status_code == (302 if name == "api-1:api-root" else 200), (name, response.status_code)


@pytest.mark.parametrize("name", sorted(WRITES))
def test_a_read_token_changes_nothing(ids, name, api_as, admin):
    from django_q.models import Schedule

    from spawner.models import BatchTemplate, RunEvent

    route = dict(API_URLS)[name]
    counts = [RunEvent.objects.count(), Batch.objects.count(), BatchTemplate.objects.count(), Schedule.objects.count()]
    api = api_as(admin, "read")
    method = getattr(api.client, METHODS.get(name, "post"))
    response = method(url_of(route, ids), json.dumps(GOOD), content_type="application/json", headers=api.headers)
    body = is_problem(response, 403)
    assert "read" in body["detail"]
    assert counts == [
        RunEvent.objects.count(),
        Batch.objects.count(),
        BatchTemplate.objects.count(),
        Schedule.objects.count(),
    ]


def test_unknown_paths_and_wrong_methods_are_problems_too(api_as, member, ids):
    api = api_as(member, "read")
    assert "/api/docs" in is_problem(api.get("/no-such-thing"), 404)["detail"]
    response = api.client.get(f"/api/batches/{ids['batch_id']}/cancel", headers=api.headers)
    assert "POST" in is_problem(response, 405)["detail"] and response["Allow"] == "POST"


def test_the_token_is_stored_hashed_and_its_use_recorded(member, token_for):
    secret = token_for(member, "read")
    assert secret.startswith("spn_") and len(secret) > 40
    token = ApiToken.objects.get(user=member)
    assert token.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in json.dumps(list(ApiToken.objects.values()), default=str)
    assert token.prefix == secret[:12] and token.last_used_at is None
    assert Api(secret).get("/batches").status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_only_an_admin_makes_an_admin_token(member, admin):
    with pytest.raises(services.NotAllowed):
        services.token_create(user=member, name="x", scope="admin")
    assert services.token_create(user=admin, name="x", scope="admin")[0].scope == "admin"


def test_the_browser_session_works_with_csrf(member, make_batch):
    batch = make_batch(member)
    client = Client(enforce_csrf_checks=True)
    client.force_login(member)
    assert client.get(f"/api/batches/{batch.id}").status_code == 200
    body = is_problem(client.post(f"/api/batches/{batch.id}/cancel"), 403)
    assert "CSRF" in body["detail"]
    client.get("/tokens/")  # sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    response = client.post(f"/api/batches/{batch.id}/cancel", headers={"X-CSRFToken": token})
    assert response.status_code == 200, response.content


# --- permissions as in the browser ------------------------------------------------------------


def test_someone_elses_batch_is_refused_where_the_browser_refuses(member, viewer, teammate, make_batch, api_as):
    batch = make_batch(member)
    for who in (viewer, teammate):
        is_problem(api_as(who).post(f"/batches/{batch.id}/cancel"), 403)
        is_problem(api_as(who).post(f"/batches/{batch.id}/retry-failed"), 403)
        is_problem(api_as(who).post(f"/batches/{batch.id}/rerun-sequential"), 403)
    assert Batch.objects.get(id=batch.id).cancel_requested is False
    # Its owner may cancel it, once; the second time does not apply (409), never a 500.
    assert api_as(member).post(f"/batches/{batch.id}/cancel").status_code == 200
    assert "not running" in is_problem(api_as(member).post(f"/batches/{batch.id}/cancel"), 409)["detail"]


def test_someone_elses_runs_and_escalations_are_refused_where_the_browser_refuses(
    reviewed, member, viewer, teammate, launcher, reviewer, make_batch, api_as
):
    """mia's batches, acted on by others through the API and through the browser's buttons: the same
    answer for the same person (batches are not hidden from others in either), and nothing changes."""
    from spawner.models import RunEvent

    failed = reviewed.runs.get(key="critical")  # failed; its P0 escalation is open
    escalation = Escalation.objects.get(batch=reviewed)
    pending = make_batch(member).runs.get(key="build")  # not ended: may be cancelled
    cases = [
        # (what, API path and body, browser path and form, who is refused)
        ("retry", (f"/runs/{failed.id}/retry", None), (f"/runs/{failed.id}/retry/", {}), (viewer, teammate, reviewer)),
        (
            "cancel",
            (f"/runs/{pending.id}/cancel", None),
            (f"/runs/{pending.id}/cancel/", {}),
            (viewer, teammate, launcher, reviewer),
        ),
        (
            "assign",
            (f"/escalations/{escalation.id}/assign", {"assignee": teammate.username}),
            (f"/escalations/{escalation.id}/assign/", {"assignee": teammate.id}),
            (viewer, teammate, launcher),
        ),
        (
            "resolve",
            (f"/escalations/{escalation.id}/resolve", {"action": "accept", "note": "fine"}),
            (f"/escalations/{escalation.id}/resolve/", {"action": "accept", "note": "fine"}),
            (viewer, teammate, launcher),
        ),
        (
            "resolve by retrying",  # may resolve, may not launch: the retry is refused
            (f"/escalations/{escalation.id}/resolve", {"action": "retry"}),
            (f"/escalations/{escalation.id}/resolve/", {"action": "retry"}),
            (reviewer,),
        ),
    ]

    def snapshot():
        return (
            list(AgentRun.objects.order_by("id").values_list("status", "attempt")),
            list(Escalation.objects.values_list("state", "assignee_id", "resolution")),
            RunEvent.objects.count(),
        )

    before = snapshot()
    for what, (api_path, body), (page_path, form), refused in cases:
        for user in refused:
            detail = is_problem(api_as(user).post(api_path, body if body is not None else {}), 403)["detail"]
            assert "permission" in detail, (what, user.username, detail)
            browser = Client()
            browser.force_login(user)
            answer = browser.post(page_path, form, headers={"HX-Request": "true"})
            assert answer.status_code == 403, (what, user.username, answer.status_code)
    assert snapshot() == before
    # Whom the browser lets act on mia's batches, the API lets too: the owner cancels her own run
    # without the cancel permission; a launcher retries her failed run; a reviewer assigns and accepts.
    assert not member.has_perm("spawner.cancel_batch")
    assert api_as(member).post(f"/runs/{pending.id}/cancel").status_code == 200
    assert api_as(reviewer).post(f"/escalations/{escalation.id}/assign", {"assignee": "rey"}).status_code == 200
    response = api_as(reviewer).post(f"/escalations/{escalation.id}/resolve", {"action": "accept", "note": "ok"})
    assert response.status_code == 200 and response.json()["resolved_by"] == "rey"
    assert api_as(launcher).post(f"/runs/{failed.id}/retry").status_code == 200
    assert AgentRun.objects.get(id=failed.id).attempt == 2


def test_launching_needs_the_permission(viewer, reviewer, api_as, agent_types):
    for who in (viewer, reviewer):
        assert "launch" in is_problem(api_as(who).post("/batches", GOOD), 403)["detail"]
    assert not Batch.objects.exists()


def test_the_shell_needs_an_admin_token_of_an_admin(admin, member, api_as, agent_types, settings, tmp_path):
    settings.SPAWNER_WORKDIR = tmp_path
    shell = {"name": "sh", "agent": "shell", "tasks": [{"key": "a", "prompt": "echo a"}]}
    agent_types["shell"].admin_only or pytest.skip("the shell preset is not admin-only here")
    body = is_problem(api_as(member).post("/batches", shell), 422)
    assert [e["field"] for e in body["errors"]] == ["agent"]
    body = is_problem(api_as(admin, "launch").post("/batches", shell), 422)
    assert body["errors"][0]["task"] == "a" and "admin" in body["errors"][0]["message"]
    assert api_as(admin, "admin").post("/batches", shell).status_code == 201


def test_escalations_assign_and_resolve(ids, reviewer, viewer, teammate, api_as):
    eid = ids["escalation_id"]
    is_problem(api_as(viewer).post(f"/escalations/{eid}/resolve", {"action": "accept"}), 403)
    is_problem(api_as(reviewer).post(f"/escalations/{eid}/assign", {"assignee": "nobody-here"}), 422)
    response = api_as(reviewer).post(f"/escalations/{eid}/assign", {"assignee": teammate.username})
    assert response.status_code == 200 and response.json()["assignee"] == teammate.username
    body = is_problem(api_as(reviewer).post(f"/escalations/{eid}/resolve", {"action": "dismiss"}), 409)
    assert "why" in body["detail"]
    is_problem(api_as(reviewer).post(f"/escalations/{eid}/resolve", {"action": "shrug"}), 422)
    response = api_as(reviewer).post(f"/escalations/{eid}/resolve", {"action": "accept", "note": "fine"})
    assert response.status_code == 200 and response.json()["state"] == "resolved"
    assert api_as(reviewer).get("/escalations", state="open").json()["count"] == 0
    assert api_as(reviewer).get("/escalations", state="resolved").json()["items"][0]["id"] == eid


def test_reviews(ids, reviewer, launcher, api_as):
    batch = ids["batch_id"]
    is_problem(api_as(launcher).post(f"/batches/{batch}/reviews", {"decision": "approve"}), 403)
    is_problem(api_as(reviewer).post(f"/batches/{batch}/reviews", {"decision": "request_changes"}), 409)
    response = api_as(reviewer).post(f"/batches/{batch}/reviews", {"decision": "approve", "comment": "ok"})
    assert response.status_code == 201 and response.json()["state"] == "approved"
    assert api_as(launcher, "read").get(f"/batches/{batch}/reviews").json()["reviews"][0]["author"] == "rey"


def test_the_markdown_export(ids, viewer, api_as):
    response = api_as(viewer, "read").get(f"/batches/{ids['batch_id']}/aggregation.md")
    assert response["Content-Type"].startswith("text/markdown") and b"Shell injection" in response.content


def test_findings_are_filtered_as_on_the_result_page(ids, viewer, api_as):
    found = api_as(viewer, "read").get(f"/batches/{ids['batch_id']}/findings", severity="high").json()
    assert found["total"] == 3 and [f["severity"] for f in found["findings"]] == ["high"]


# --- launching --------------------------------------------------------------------------------


@pytest.fixture
def workdir(settings, tmp_path, agent_types):
    settings.SPAWNER_WORKDIR = tmp_path
    return tmp_path


def test_launch_from_json_and_from_yaml(member, api_as, workdir):
    response = api_as(member).post("/batches", GOOD)
    assert response.status_code == 201
    body = response.json()
    assert body["owner"] == "mia" and [r["key"] for r in body["runs"]] == ["a", "b"]
    assert body["url"] == f"/api/batches/{body['id']}"
    yaml = "name: y\nagent: sh\ntasks:\n  - {key: a, prompt: echo a}\n"
    response = api_as(member).post("/batches", yaml, content_type="application/yaml")
    assert response.status_code == 201 and response.json()["name"] == "y"
    is_problem(api_as(member).post("/batches", yaml, content_type="application/x-www-form-urlencoded"), 415)


def test_a_retried_launch_with_the_same_key_launches_once(member, launcher, api_as, workdir):
    api = api_as(member)
    first = api.post("/batches", GOOD, headers={"Idempotency-Key": "ci-run-41"})
    again = api.post("/batches", GOOD, headers={"Idempotency-Key": "ci-run-41"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] and Batch.objects.count() == 1
    # The same key for another request is refused; another person's key is theirs.
    body = is_problem(api.post("/batches", {**GOOD, "name": "other"}, headers={"Idempotency-Key": "ci-run-41"}), 422)
    assert "another request" in body["detail"]
    assert api_as(launcher).post("/batches", GOOD, headers={"Idempotency-Key": "ci-run-41"}).status_code == 201
    assert Batch.objects.count() == 2
    is_problem(api.post("/batches", GOOD, headers={"Idempotency-Key": "x" * 300}), 409)


def test_a_bad_spec_lists_every_field_error_with_task_field_and_line(member, api_as, workdir):
    yaml = (
        "name: bad\n"
        "agent: sh\n"
        "tasks:\n"
        "  - key: a\n"
        "    prompt: echo a\n"
        "    timeout: -5\n"
        "  - key: b\n"
        "    agent: no-such-agent\n"
        "    priority: P7\n"
        "  - key: c\n"
        "    depends_on: [zzz]\n"
    )
    body = is_problem(api_as(member).post("/batches", yaml, content_type="application/yaml"), 422)
    assert body["type"].endswith("spec-invalid") and "3" not in body["title"]
    found = {(e["task"], e["field"], e["line"]) for e in body["errors"]}
    assert ("a", "timeout", 4) in found or ("a", "timeout", 6) in found
    assert {("b", "agent"), ("b", "priority"), ("c", "depends_on")} <= {(t, f) for t, f, _ in found}
    assert all(e["line"] and e["message"] for e in body["errors"])
    # The same errors the form shows: one per field.
    with pytest.raises(services.spec.SpecInvalid) as exc:
        services.spec_load(yaml, is_admin=False)
    assert len(body["errors"]) == len(exc.value.errors)
    assert not Batch.objects.exists()


def test_plan_without_launching(member, viewer, api_as, workdir):
    spec = {**GOOD, "tasks": [*GOOD["tasks"], {"key": "c", "prompt": "echo c", "depends_on": ["a"]}]}
    body = api_as(viewer, "launch").post("/batches/plan", spec).json()
    assert body["waves"] == [["a", "b"], ["c"]] and body["tasks"] == 3
    assert not Batch.objects.exists()


def costly(*estimates: float) -> dict:
    """GOOD with each task's declared estimate (the plan's estimate is their sum)."""
    return {**GOOD, "tasks": [{**t, "estimate_usd": e} for t, e in zip(GOOD["tasks"], estimates, strict=True)]}


def test_a_launch_above_the_cost_to_confirm_needs_confirm_cost(member, api_as, workdir, settings):
    settings.SPAWNER = {**settings.SPAWNER, "CONFIRM_COST_USD": 1.0}
    api = api_as(member)
    planned = api.post("/batches/plan", costly(0.75, 0.75)).json()["cost"]
    assert (planned["estimate_usd"], planned["needs_confirm"]) == (1.5, True)

    body = is_problem(api.post("/batches", costly(0.75, 0.75)), 409)
    assert body["type"] == "/api/problems/refused"
    assert body["detail"] == "the estimated cost $1.50 is above $1.00: send confirm_cost=true to launch it"
    assert (body["estimate_usd"], body["confirm_above_usd"], body["unknown_paid"]) == (1.5, 1.0, [])
    assert not Batch.objects.exists()
    unreadable = is_problem(api.post("/batches?confirm_cost=perhaps", costly(0.75, 0.75)), 422)
    assert "confirm_cost" in unreadable["detail"] and not Batch.objects.exists()

    launched = api.post("/batches?confirm_cost=true", costly(0.75, 0.75))
    assert launched.status_code == 201, launched.content
    assert Batch.objects.get().id == launched.json()["id"]
    # At the threshold itself (and below it) no confirmation is asked.
    assert api.post("/batches", costly(0.5, 0.5)).status_code == 201
    assert Batch.objects.count() == 2


def test_retry_rerun_and_compare(member, api_as, make_batch):
    from tests.dashboard.conftest import finish, move

    batch = make_batch(member)
    for run in batch.runs.all():
        move(move(run, "running"), "failed" if run.key == "lint" else "succeeded", error="exit 1")
    finish(batch, "partial")
    api = api_as(member)
    assert api.post(f"/batches/{batch.id}/retry-failed").json() == {"retried": ["lint"], "not_retried": []}
    lint = batch.runs.get(key="lint")
    assert "only ended" in is_problem(api.post(f"/runs/{lint.id}/retry"), 409)["detail"]
    assert api.post(f"/runs/{lint.id}/cancel").status_code == 200
    rerun = api.post(f"/batches/{batch.id}/rerun-sequential")
    assert rerun.status_code == 201 and rerun.json()["mode"] == "sequential"
    compared = api.get(f"/batches/{batch.id}/compare").json()
    assert compared["parallel"]["id"] == batch.id and compared["sequential"]["id"] == rerun.json()["id"]
    is_problem(api.post(f"/batches/{rerun.json()['id']}/rerun-sequential"), 409)


# --- lists and pages --------------------------------------------------------------------------


def test_pagination_and_filters(member, launcher, make_batch, api_as):
    for i in range(5):
        make_batch(member if i % 2 else launcher)
    api = api_as(member, "read")
    first = api.get("/batches", page_size=2).json()
    assert (first["count"], first["pages"], len(first["items"])) == (5, 3, 2)
    last = api.get("/batches", page_size=2, page=3).json()
    assert len(last["items"]) == 1
    seen = [b["id"] for p in (1, 2, 3) for b in api.get("/batches", page_size=2, page=p).json()["items"]]
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 5
    assert api.get("/batches", page=999_999).json()["items"] == []
    assert api.get("/batches", owner="mia").json()["count"] == 2
    assert api.get("/batches", owner=str(launcher.id)).json()["count"] == 3
    assert api.get("/batches", status="running", name="DEM").json()["count"] == 5
    for bad in ({"page": 10**30}, {"page": 0}, {"page": "x"}, {"page_size": 10_000}, {"status": "nope"}):
        body = is_problem(api.get("/batches", **bad), 422)
        assert body["errors"][0]["field"] in ("page", "page_size", "status")


async def read_all(response) -> bytes:
    return b"".join([chunk async for chunk in response.streaming_content])


def test_run_output_tail_ranges_and_whole(ids, api_as, viewer, tmp_path):
    log = tmp_path / "critical.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(1000)))
    RunAttempt.objects.filter(run_id=ids["run_id"]).update(log_path=str(log))
    api = api_as(viewer, "read")
    out = f"/runs/{ids['run_id']}/output"
    tail = api.get(out, tail=9)
    assert tail.content == b"line 999\n" and tail["X-Log-Size"] == str(log.stat().st_size)
    assert api.get(out, start=0, end=14).content == b"line 0\nline 1\n"
    whole = api.get(out, whole="true")
    assert async_to_sync(read_all)(whole) == log.read_bytes()
    is_problem(api.get(out, start=10**9), 416)
    is_problem(api.get(out, attempt=7), 404)
    is_problem(api.get(out, tail=-1), 422)


# --- hostile input ----------------------------------------------------------------------------


def test_hostile_bodies_get_a_clear_4xx(member, api_as, workdir):
    api = api_as(member)
    deep = "[" * 50_000 + "]" * 50_000
    is_problem(api.post("/batches", deep, content_type="application/json"), 422)
    is_problem(api.post("/batches/plan", '{"name": ' * 20_000, content_type="application/json"), 422)
    review = '{"decision": "approve", "comment": ' + "[" * 50_000 + "]" * 50_000 + "}"
    batch = Batch.objects.create(name="x", spec={})
    assert 400 <= api.post(f"/batches/{batch.id}/reviews", review).status_code < 500
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(20)
    )
    body = is_problem(api.post("/batches", bomb, content_type="application/yaml"), 422)
    assert body["errors"]
    huge = "name: x\n# " + "x" * (10 * 1024 * 1024) + "\n"
    body = is_problem(api.post("/batches", huge, content_type="application/yaml"), 413)
    assert "bytes" in body["detail"]
    is_problem(api.post("/batches", b"\xff\xfe name", content_type="text/plain"), 400)
    assert not Batch.objects.filter(owner=member).exists()


# --- the schema and the docs ------------------------------------------------------------------


def test_the_openapi_schema_is_valid(api_as, viewer):
    response = api_as(viewer, "read").get("/openapi.json")
    schema = response.json()
    validate(schema)
    paths = schema["paths"]
    assert {"/api/batches", "/api/batches/{batch_id}", "/api/runs/{run_id}/output", "/api/escalations"} <= set(paths)
    assert "Idempotency-Key" in json.dumps(paths["/api/batches"]["post"])
    assert "bearerAuth" in json.dumps(schema["components"]["securitySchemes"]) or "TokenAuth" in json.dumps(
        schema["components"]["securitySchemes"]
    )


def test_the_docs_page_works_offline(member, client):
    client.force_login(member)
    page = client.get(reverse("api-1:openapi-view"))
    assert page.status_code == 200
    html = page.content.decode()
    assert not re.search(r"""(src|href)=["']https?://""", html), "the docs page must not load from a CDN"
    for asset in re.findall(r"""(?:src|href)=["'](/static/[^"']+)""", html):
        assert client.get(asset).status_code == 200, asset


# --- the tokens page --------------------------------------------------------------------------


def test_the_tokens_page_makes_shows_once_and_revokes(member, teammate, client):
    client.force_login(member)
    page = client.get("/tokens/")
    assert page.status_code == 200 and b"No token yet" in page.content
    made = client.post("/tokens/", {"name": "CI", "scope": "launch", "expires": ""})
    assert made.status_code == 200
    secret = re.search(rb'value="(spn_[^"]+)"', made.content).group(1).decode()
    assert Api(secret).get("/batches").status_code == 200
    again = client.get("/tokens/")
    assert secret.encode() not in again.content and secret[:12].encode() in again.content
    token = ApiToken.objects.get(user=member)
    # Someone else cannot revoke it; its person can, once.
    other = Client()
    other.force_login(teammate)
    assert other.post(f"/tokens/{token.id}/revoke/").status_code == 409
    assert client.post(f"/tokens/{token.id}/revoke/").status_code == 302
    assert client.post(f"/tokens/{token.id}/revoke/").status_code == 409
    assert Api(secret).get("/batches").status_code == 401
    # Bad input names the field; a non-admin is not offered the admin scope.
    bad = client.post("/tokens/", {"name": "", "scope": "admin", "expires": "not a date"})
    assert bad.status_code == 400
    assert b'value="admin"' not in client.get("/tokens/").content
    past = (timezone.now() - timedelta(days=2)).date().isoformat()
    assert client.post("/tokens/", {"name": "old", "scope": "read", "expires": past}).status_code == 400


@pytest.mark.django_db(transaction=True)
def test_the_same_key_sent_twice_at_once_launches_once(member, token_for, settings, tmp_path, agent_types):
    """Two requests racing with one key: one launches, the other gets its batch (the loser's launch is undone)."""
    import threading

    from django.db import connections

    settings.SPAWNER_WORKDIR = tmp_path
    secret = token_for(member)
    start = threading.Barrier(2)
    answers = []

    def send():
        try:
            start.wait()
            response = Api(secret).post("/batches", GOOD, headers={"Idempotency-Key": "race"})
            answers.append((response.status_code, response.json()["id"]))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(code for code, _ in answers) == [200, 201], answers
    assert len({batch for _, batch in answers}) == 1
    assert Batch.objects.count() == 1
