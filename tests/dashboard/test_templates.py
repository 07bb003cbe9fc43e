"""Saved templates: save, launch with variables (page, API, CLI plan), hostile values, permissions."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from spawner import services
from spawner.errors import NotAllowed, SpecInvalid
from spawner.models import Batch, BatchTemplate, TemplateSchedule
from tests.api.conftest import Api, api_as, token_for  # noqa: F401  (fixtures)
from tests.dashboard.conftest import grant

SPEC = """\
name: check ${branch}
agent: sh
max_parallel: ${slots}
tasks:
  - key: a
    prompt: "echo branch ${branch} ticket ${ticket}"
  - key: b
    prompt: "echo {{ deps.a.summary }} $${HOME}"
    depends_on: [a]
"""
VARS = "branch=main\nslots=2\nticket"


def client(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


@pytest.fixture
def template(agent_types, member):
    return services.template_save(actor=member, name="nightly", spec_text=SPEC, variables_text=VARS)


def test_saving_a_template_from_the_page_and_launching_it_with_variables(agent_types, member):
    c = client(member)
    response = c.post(
        "/templates/", {"name": "nightly", "spec_text": SPEC, "variables": VARS, "description": "every night"}
    )
    assert response.status_code == 302
    t = BatchTemplate.objects.get(name="nightly")
    assert t.owner == member and t.variables == {"branch": "main", "slots": "2", "ticket": None}
    page = c.get(f"/templates/{t.id}/").content.decode()
    assert 'name="var_branch"' in page and 'name="var_ticket"' in page and "Not launched yet" in page

    response = c.post(f"/templates/{t.id}/", {"var_branch": "feature/x", "var_ticket": "T-7"})
    assert response.status_code == 302
    batch = Batch.objects.get()
    assert response["Location"] == f"/batches/{batch.id}/"
    assert batch.template == t and batch.owner == member and batch.name == "check feature/x"
    assert batch.max_parallel == 2
    prompts = dict(batch.runs.values_list("key", "prompt"))
    assert prompts == {"a": "echo branch feature/x ticket T-7", "b": "echo {{ deps.a.summary }} ${HOME}"}
    page = c.get(f"/templates/{t.id}/").content.decode()
    assert f'href="/batches/{batch.id}/"' in page and 'class="cell running"' in page


def test_a_required_variable_left_empty_is_a_clear_error(template, member):
    response = client(member).post(f"/templates/{template.id}/", {"var_branch": "x"})
    assert response.status_code == 400
    assert "ticket: is required" in response.content.decode()
    assert not Batch.objects.exists()


def test_saving_refuses_undeclared_variables_and_a_bad_spec_with_the_templates_line(agent_types, member):
    c = client(member)
    response = c.post("/templates/", {"name": "t", "spec_text": SPEC, "variables": "branch=main"})
    assert response.status_code == 400 and "declare slots, ticket" in response.content.decode()
    bad = SPEC.replace("depends_on: [a]", "depends_on: [zzz]")
    response = c.post("/templates/", {"name": "t", "spec_text": bad, "variables": VARS})
    body = response.content.decode()
    assert response.status_code == 400 and "unknown dependency" in body and "line 9" in body
    assert not BatchTemplate.objects.exists()


def test_names_are_unique_per_owner(template, member, launcher):
    with pytest.raises(SpecInvalid, match="already have"):
        services.template_save(actor=member, name="nightly", spec_text=SPEC, variables_text=VARS)
    other = services.template_save(actor=launcher, name="nightly", spec_text=SPEC, variables_text=VARS)
    assert other.owner == launcher


@pytest.mark.parametrize(
    "value",
    [
        "main\ntasks: [{key: evil, agent: shell, prompt: 'id'}]",
        "x: {agent: shell}",
        "&a [1, 2] *a",
        "'; webhook: http://evil.example/\n- key: z",
        "---\nname: other\n...",
    ],
)
def test_hostile_values_are_text_and_never_structure(template, member, value):
    batch = services.template_launch(template=template, values={"branch": value, "ticket": "1"}, actor=member)
    assert batch.name == f"check {value}"
    assert list(batch.runs.order_by("key").values_list("key", flat=True)) == ["a", "b"]
    assert batch.runs.get(key="a").prompt == f"echo branch {value} ticket 1"
    assert {r.agent_type.name for r in batch.runs.all()} == {"sh"} and batch.webhook_url == ""


def test_a_value_cannot_smuggle_an_admin_only_agent(template, member):
    with pytest.raises(SpecInvalid):
        services.template_launch(template=template, values={"ticket": "1", "slots": "x: 1"}, actor=member)


def test_without_launch_permission_one_can_look_but_not_launch_save_or_schedule(template, viewer, reviewer):
    for person in (viewer, reviewer):
        c = client(person)
        assert c.get(f"/templates/{template.id}/").status_code == 200
        assert c.get("/templates/").status_code == 200
        assert c.post(f"/templates/{template.id}/", {"var_ticket": "1"}).status_code == 403
        assert c.post("/templates/", {"name": "x", "spec_text": SPEC, "variables": VARS}).status_code == 403
        r = c.post(f"/templates/{template.id}/schedules/", {"cron": "* * * * *", "timezone": "UTC"})
        assert r.status_code == 403
    assert not Batch.objects.exists() and not TemplateSchedule.objects.exists()
    with pytest.raises(NotAllowed):
        services.template_launch(template=template, values={"ticket": "1"}, actor=viewer)


def test_a_teammate_may_launch_but_not_change_or_schedule_someone_elses_template(template, launcher):
    c = client(launcher)
    assert c.post(f"/templates/{template.id}/", {"var_ticket": "1"}).status_code == 302
    assert c.post(f"/templates/{template.id}/schedules/", {"cron": "* * * * *", "timezone": "UTC"}).status_code == 403
    assert c.post(f"/templates/{template.id}/edit/", {"action": "delete"}).status_code == 403
    assert BatchTemplate.objects.filter(id=template.id).exists()


def test_schedule_create_pause_resume_delete_from_the_page(template, member):
    from django_q.models import Schedule

    c = client(member)
    response = c.post(
        f"/templates/{template.id}/schedules/",
        {"cron": "30 2 * * 1-5", "timezone": "Europe/Paris", "var_ticket": "nightly"},
    )
    assert response.status_code == 302
    link = TemplateSchedule.objects.get()
    q2 = Schedule.objects.get(id=link.schedule_id)
    assert q2.schedule_type == Schedule.CRON and q2.cron == "30 2 * * 1-5"
    assert q2.func == services.TEMPLATE_SCHEDULED_FUNC
    assert link.run_as == member and link.variables == {"branch": "", "slots": "", "ticket": "nightly"}
    from zoneinfo import ZoneInfo

    local = q2.next_run.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (2, 30) and local.weekday() < 5
    assert local.strftime("%Y-%m-%d 02:30") in c.get(f"/templates/{template.id}/").content.decode()
    assert c.post(f"/schedules/{link.id}/", {"action": "pause"}).status_code == 302
    assert Schedule.objects.get(id=q2.id).repeats == 0
    assert "paused" in c.get(f"/templates/{template.id}/").content.decode()
    assert c.post(f"/schedules/{link.id}/", {"action": "resume"}).status_code == 302
    assert Schedule.objects.get(id=q2.id).repeats == -1
    assert c.post(f"/schedules/{link.id}/", {"action": "delete"}).status_code == 302
    assert not Schedule.objects.exists() and not TemplateSchedule.objects.exists()


@pytest.mark.parametrize(
    ("cron", "tz", "says"),
    [("every day", "UTC", "not a cron expression"), ("* * * * *", "Mars/Olympus", "not a time zone")],
)
def test_a_bad_cron_or_time_zone_is_named(template, member, cron, tz, says):
    response = client(member).post(f"/templates/{template.id}/schedules/", {"cron": cron, "timezone": tz})
    assert response.status_code == 400 and says in response.content.decode()
    assert not TemplateSchedule.objects.exists()


def test_the_owner_edits_and_deletes_and_batches_stay(template, member):
    c = client(member)
    batch = services.template_launch(template=template, values={"ticket": "1"}, actor=member)
    r = c.post(
        f"/templates/{template.id}/edit/",
        {"action": "save", "name": "nightly2", "spec_text": SPEC, "variables": VARS.replace("main", "dev")},
    )
    assert r.status_code == 302
    template.refresh_from_db()
    assert template.name == "nightly2" and template.variables["branch"] == "dev"
    assert c.post(f"/templates/{template.id}/edit/", {"action": "delete"}).status_code == 302
    assert not BatchTemplate.objects.exists()
    batch.refresh_from_db()
    assert batch.template is None


def test_a_global_template_needs_an_admin(agent_types, member, admin):
    with pytest.raises(NotAllowed):
        services.template_save(actor=member, name="g", spec_text=SPEC, variables_text=VARS, shared=True)
    t = services.template_save(actor=admin, name="g", spec_text=SPEC, variables_text=VARS, shared=True)
    assert t.owner is None


# --- the API -----------------------------------------------------------------------------------


def test_api_lists_and_launches_with_variables(template, member, api_as):  # noqa: F811
    api = api_as(member)
    services.template_save(actor=member, name="weekly", spec_text=SPEC, variables_text=VARS)
    listed = api.get("/templates").json()
    assert [t["name"] for t in listed] == ["nightly", "weekly"]
    assert [t["name"] for t in api.get("/templates?name=weekly").json()] == ["weekly"]
    listed = listed[:1]
    assert {"name": "ticket", "default": None} in listed[0]["variables"]
    response = api.post(f"/templates/{template.id}/launch", {"variables": {"ticket": "T-9", "branch": "b1"}})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "check b1"
    assert Batch.objects.get(id=body["id"]).template == template
    detail = api.get(f"/templates/{template.id}").json()
    assert [row["id"] for row in detail["launches"]] == [body["id"]]


def test_api_launch_errors_and_permissions(template, member, viewer, api_as):  # noqa: F811
    missing = api_as(member).post(f"/templates/{template.id}/launch", {"variables": {}})
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "ticket"
    assert api_as(member).post(f"/templates/{template.id}/launch", {"variables": {"nope": "1"}}).status_code == 422
    assert api_as(viewer).post(f"/templates/{template.id}/launch", {"variables": {"ticket": "1"}}).status_code == 403
    assert api_as(member, "read").post(f"/templates/{template.id}/launch", {"variables": {}}).status_code == 403
    assert Api().get("/templates").status_code == 401
    assert not Batch.objects.exists()


COSTLY = "name: dear ${who}\nagent: sh\ntasks:\n  - {key: a, prompt: 'echo ${who}', estimate_usd: 7}\n"


def test_a_costly_template_asks_for_a_confirmation_on_the_page_and_the_api_but_not_on_its_schedule(
    agent_types,
    member,
    api_as,  # noqa: F811
):
    t = services.template_save(actor=member, name="dear", spec_text=COSTLY, variables_text="who=you")
    c = client(member)
    response = c.post(f"/templates/{t.id}/", {"var_who": "me"})
    page = response.content.decode()
    assert response.status_code == 400 and not Batch.objects.exists()
    assert 'id="cost-confirm"' in page and "the estimated cost $7.00 is above $5.00" in page
    assert 'name="var_who" value="me"' in page  # what was typed stays
    response = c.post(f"/templates/{t.id}/", {"var_who": "me", "confirm_cost": "1"})
    assert response.status_code == 302 and Batch.objects.count() == 1

    refused = api_as(member).post(f"/templates/{t.id}/launch", {"variables": {}})
    assert refused.status_code == 409 and "send confirm_cost=true" in refused.json()["detail"]
    launched = api_as(member).post(f"/templates/{t.id}/launch?confirm_cost=true", {"variables": {}})
    assert launched.status_code == 201 and Batch.objects.count() == 2

    # A schedule launches unattended: its budgets hold it, no person is there to say yes.
    link = services.schedule_create(template=t, cron="0 3 * * *", tz="UTC", values={}, actor=member)
    assert services.schedule_fire(link.id).name == "dear you"


# --- the command line --------------------------------------------------------------------------


def test_cli_plans_a_template_with_vars(template, capsys):
    call_command("spawn", "--template", "nightly", "--var", "ticket=T-1", "--var", "branch=rel", "--plan")
    out = capsys.readouterr().out
    assert "wave 1: a" in out and "wave 2: b" in out
    assert not Batch.objects.exists()


def test_cli_finds_owner_slash_name_among_many_so_named(agent_types, member, capsys, django_user_model):
    for i in range(60):  # more than any page of rows the lookup might read
        owner = django_user_model.objects.create_user(f"u{i:02d}")  # no password: no hashing
        owner = grant(owner, "add_batch")
        services.template_save(actor=owner, name="nightly", spec_text=SPEC, variables_text=VARS)
    services.template_save(actor=member, name="nightly", spec_text=SPEC, variables_text=VARS)
    call_command("spawn", "--template", f"{member.username}/nightly", "--var", "ticket=T-1", "--plan")
    assert "wave 1: a" in capsys.readouterr().out
    with pytest.raises(CommandError, match="several templates are named 'nightly': say whose"):
        call_command("spawn", "--template", "nightly", "--var", "ticket=T-1", "--plan")


def test_cli_template_errors(template, member, capsys):
    with pytest.raises(CommandError, match="no template named"):
        call_command("spawn", "--template", "nope", "--plan")
    with pytest.raises(CommandError, match="1 error"):
        call_command("spawn", "--template", "mia/nightly", "--plan")
    assert "ticket" in capsys.readouterr().out
    with pytest.raises(CommandError, match="NAME=VALUE"):
        call_command("spawn", "--template", "nightly", "--var", "ticket", "--plan")


# --- what a schedule's task does (the cluster's part is tests/spawner/test_template_schedule.py) --


def test_a_scheduled_launch_runs_as_its_person_and_keeps_the_time_zone(template, member):
    from zoneinfo import ZoneInfo

    from django_q.models import Schedule

    link = services.schedule_create(
        template=template, cron="0 3 * * *", tz="Asia/Kolkata", values={"ticket": "cron"}, actor=member
    )
    Schedule.objects.filter(id=link.schedule_id).update(next_run=None)
    batch = services.schedule_fire(link.id)
    assert batch.template == template and batch.owner == member
    assert batch.runs.get(key="a").prompt == "echo branch main ticket cron"
    local = Schedule.objects.get(id=link.schedule_id).next_run.astimezone(ZoneInfo("Asia/Kolkata"))
    assert (local.hour, local.minute) == (3, 0)


def test_a_scheduled_launch_of_someone_who_lost_the_permission_launches_nothing(template, member):
    link = services.schedule_create(template=template, cron="0 3 * * *", values={"ticket": "x"}, actor=member)
    member.user_permissions.clear()
    link.run_as = type(member).objects.get(id=member.id)
    link.save()
    with pytest.raises(NotAllowed):
        services.schedule_fire(link.id)
    assert not Batch.objects.exists()


def test_cli_template_on_a_server_launches_it_as_saved(template):
    with pytest.raises(CommandError, match="no --plan, --compare or --sequential"):
        call_command("spawn", "--template", "nightly", "--server", "http://127.0.0.1:9", "--plan")
    with pytest.raises(CommandError, match="give a spec file"):
        call_command("spawn", "--plan")


def test_an_admins_shell_template_is_refused_to_a_member(agent_types, admin, member):
    spec_text = "name: s\nagent: shell\ntasks:\n  - {key: a, prompt: 'echo ${word}'}\n"
    with pytest.raises(SpecInvalid):
        services.template_save(actor=member, name="s", spec_text=spec_text, variables_text="word=hi")
    t = services.template_save(actor=admin, name="s", spec_text=spec_text, variables_text="word=hi", shared=True)
    response = client(member).post(f"/templates/{t.id}/", {"var_word": "x"})
    assert response.status_code == 400 and "admin" in response.content.decode()
    assert not Batch.objects.exists()


def test_the_page_says_how_a_schedules_last_task_went(template, member):
    from django.utils import timezone
    from django_q.models import Schedule, Task

    link = services.schedule_create(template=template, cron="0 3 * * *", values={"ticket": "x"}, actor=member)
    now = timezone.now()
    Task.objects.create(
        id="t1",
        name="t1",
        func=services.TEMPLATE_SCHEDULED_FUNC,
        started=now,
        stopped=now,
        success=False,
        result="you need the permission to launch batches : Traceback (most recent call last): secret/path.py",
    )
    Schedule.objects.filter(id=link.schedule_id).update(task="t1")
    page = client(member).get(f"/templates/{template.id}/").content.decode()
    assert "refused" in page and "you need the permission to launch batches" in page
    assert "secret/path.py" not in page
