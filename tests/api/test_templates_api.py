"""Saved templates and their schedules through the API: the services the template pages use, the
same permissions, problem details naming what is wrong."""

from __future__ import annotations

import json

import pytest
from django_q.models import Schedule

from spawner.models import BatchTemplate, TemplateSchedule

SPEC = "name: nightly\nagent: sh\ntasks:\n  - {key: a, prompt: 'echo ${branch}'}\n"
BODY = {"name": "nightly", "spec_text": SPEC, "variables": {"branch": "main"}, "description": "every night"}


def problem(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"] == "application/problem+json"
    return json.loads(response.content)


def send(api, method: str, path: str, body=None):
    call = getattr(api.client, method)
    return call("/api" + path, json.dumps(body or {}), content_type="application/json", headers=api.headers)


@pytest.fixture
def made(member, api_as, agent_types) -> dict:
    response = api_as(member).post("/templates", BODY)
    assert response.status_code == 201, response.content
    return response.json()


def test_create_read_update_delete(made, member, api_as):
    api = api_as(member)
    assert made["owner"] == "mia" and made["variables"] == [{"name": "branch", "default": "main"}]
    assert api.get(f"/templates/{made['id']}").json()["spec_text"] == SPEC

    again = problem(api.post("/templates", BODY), 409)
    assert again["type"].endswith("template-name-taken") and again["errors"][0]["field"] == "name"

    changed = send(api, "put", f"/templates/{made['id']}", {**BODY, "variables": {"branch": None}})
    assert changed.status_code == 200 and changed.json()["variables"] == [{"name": "branch", "default": None}]
    assert BatchTemplate.objects.get(id=made["id"]).variables == {"branch": None}

    assert send(api, "delete", f"/templates/{made['id']}").status_code == 204
    assert not BatchTemplate.objects.filter(id=made["id"]).exists()
    problem(api.get(f"/templates/{made['id']}"), 404)


def test_bad_templates_are_problems_that_name_the_field(member, api_as, agent_types):
    api = api_as(member)
    undeclared = problem(api.post("/templates", {**BODY, "variables": {}}), 422)
    assert undeclared["type"].endswith("template-invalid") and "branch" in undeclared["detail"]
    assert [e["field"] for e in undeclared["errors"]] == ["variables"]
    bad_name = problem(api.post("/templates", {**BODY, "name": "no spaces please"}), 422)
    assert bad_name["errors"][0]["field"] == "name"
    bad_spec = problem(api.post("/templates", {**BODY, "spec_text": SPEC.replace("agent: sh", "agent: nope")}), 422)
    assert any(e["field"] == "agent" and e["line"] for e in bad_spec["errors"]), bad_spec
    two_lines = problem(api.post("/templates", {**BODY, "variables": {"branch": "a\nb"}}), 422)
    assert two_lines["errors"][0]["field"] == "variables"
    assert not BatchTemplate.objects.exists()


def test_the_same_permissions_as_the_pages(made, member, launcher, viewer, admin, api_as):
    path = f"/templates/{made['id']}"
    assert "launch" in problem(api_as(viewer).post("/templates", {**BODY, "name": "mine"}), 403)["detail"]
    shared_by_launcher = api_as(launcher).post("/templates", {**BODY, "name": "all", "shared": True})
    assert "admin" in problem(shared_by_launcher, 403)["detail"]
    problem(send(api_as(launcher), "put", path, BODY), 403)
    problem(send(api_as(launcher), "delete", path), 403)
    problem(api_as(launcher).post(f"{path}/schedules", {"cron": "0 3 * * *"}), 403)
    # An admin's token of scope `launch` is not an admin's; of scope `admin` it is.
    problem(send(api_as(admin, "launch"), "put", path, {**BODY, "description": "x"}), 403)
    assert send(api_as(admin, "admin"), "put", path, {**BODY, "description": "x"}).status_code == 200
    shared = api_as(admin, "admin").post("/templates", {**BODY, "name": "for-all", "shared": True})
    assert shared.status_code == 201 and shared.json()["owner"] is None
    assert BatchTemplate.objects.get(id=made["id"]).description == "x"


def test_schedules(made, member, launcher, api_as):
    api = api_as(member)
    path = f"/templates/{made['id']}/schedules"
    bad = problem(api.post(path, {"cron": "every day", "timezone": "Mars/Olympus"}), 422)
    assert {e["field"] for e in bad["errors"]} == {"cron", "timezone"} and "Mars/Olympus" in bad["detail"]
    assert not TemplateSchedule.objects.exists()
    problem(api.post(path, {"cron": "0 3 * * *", "variables": {"colour": "x"}}), 422)

    created = api.post(path, {"cron": "30 2 * * 1-5", "timezone": "Europe/Paris", "variables": {"branch": "dev"}})
    assert created.status_code == 201, created.content
    schedule = created.json()
    assert schedule["run_as"] == "mia" and not schedule["paused"] and schedule["next_run"]
    assert api.get(f"/templates/{made['id']}").json()["schedules"][0]["id"] == schedule["id"]
    q2 = TemplateSchedule.objects.get(id=schedule["id"]).schedule_id

    problem(api_as(launcher).post(f"/schedules/{schedule['id']}/pause"), 403)
    assert api.post(f"/schedules/{schedule['id']}/pause").json()["paused"] is True
    assert Schedule.objects.get(id=q2).repeats == 0
    assert api.post(f"/schedules/{schedule['id']}/resume").json()["paused"] is False
    assert Schedule.objects.get(id=q2).repeats == -1

    problem(send(api_as(launcher), "delete", f"/schedules/{schedule['id']}"), 403)
    assert send(api, "delete", f"/schedules/{schedule['id']}").status_code == 204
    assert not Schedule.objects.filter(id=q2).exists() and not TemplateSchedule.objects.exists()

    # Deleting a template takes its schedules with it.
    api.post(path, {"cron": "0 3 * * *"})
    assert send(api, "delete", f"/templates/{made['id']}").status_code == 204
    assert not Schedule.objects.filter(func="spawner.templates.scheduled_launch").exists()
