"""The admin: what the engine wrote is read-only there; agent types have a form with clear errors
and say whether this server can run them."""

from __future__ import annotations

import pytest

from spawner.models import AgentRun, AgentType, Batch, RunAttempt, RunEvent


@pytest.fixture
def staff(client, admin):
    client.force_login(admin)
    return client


@pytest.mark.parametrize(
    ("model", "path"), [(Batch, "batch"), (AgentRun, "agentrun"), (RunAttempt, "runattempt"), (RunEvent, "runevent")]
)
def test_engine_records_cannot_be_added_changed_or_deleted(staff, member, make_batch, model, path):
    make_batch(member)
    row = model.objects.order_by("id").first()
    count = model.objects.count()
    listing = staff.get(f"/admin/spawner/{path}/").content.decode()
    assert f'href="/admin/spawner/{path}/add/"' not in listing
    assert staff.get(f"/admin/spawner/{path}/add/").status_code == 403
    page = staff.get(f"/admin/spawner/{path}/{row.id}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()  # a view, no save
    assert staff.post(f"/admin/spawner/{path}/{row.id}/change/", {}).status_code == 403
    assert staff.get(f"/admin/spawner/{path}/{row.id}/delete/").status_code == 403
    assert staff.post(f"/admin/spawner/{path}/{row.id}/delete/", {"post": "yes"}).status_code == 403
    assert model.objects.count() == count


def form(**changes) -> dict:
    data = {
        "name": "tool",
        "kind": "command",
        "prompt_via": "arg",
        "prompt_kind": "text",
        "spawn_stagger_seconds": "0",
        "enabled": "on",
        "argv": "sh\n-c\n{prompt}\n",
        "env": "",
        "secret_names": "",
        "success_exit_codes": "",
        "rate_limit_exit_codes": "",
    }
    return {**data, **changes}


def test_an_agent_type_is_written_as_lines_not_json(staff):
    data = form(env="LANG=C.UTF-8\nMODE=a=b\n", secret_names="API_KEY, OTHER_TOKEN", success_exit_codes="0, 1")
    response = staff.post("/admin/spawner/agenttype/add/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    saved = AgentType.objects.get(name="tool")
    assert saved.argv == ["sh", "-c", "{prompt}"]
    assert saved.env == {"LANG": "C.UTF-8", "MODE": "a=b"}
    assert saved.secret_names == ["API_KEY", "OTHER_TOKEN"] and saved.success_exit_codes == [0, 1]
    page = staff.get(f"/admin/spawner/agenttype/{saved.id}/change/").content.decode()
    assert "sh\n-c\n{prompt}</textarea>" in page and "LANG=C.UTF-8\nMODE=a=b</textarea>" in page


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"env": "LANG C"}, "Environment, line 1: write NAME=value (got &#x27;LANG C&#x27;)."),
        ({"secret_names": "API-KEY"}, "Secret names: &#x27;API-KEY&#x27; is not a variable name"),
        ({"success_exit_codes": "0, one"}, "Success exit codes: &#x27;one&#x27; is not a whole number."),
        ({"rate_limit_exit_codes": "300"}, "Rate-limit exit codes: 300 is not an exit code (0 to 255)."),
        ({"argv": '["sh", 1]'}, "Command (argv): a JSON list of strings, or one item a line."),
        ({"argv": ""}, "A command agent type needs its command as a list."),
    ],
)
def test_bad_input_names_the_field(staff, changes, message):
    response = staff.post("/admin/spawner/agenttype/add/", form(**changes))
    assert response.status_code == 200 and message in response.content.decode()
    assert not AgentType.objects.filter(name="tool").exists()


def test_availability_and_its_reason_show_on_the_list_and_the_change_page(staff, agent_types):
    missing = AgentType.objects.create(name="ghost", argv=["no-such-agent-binary-xyz", "{prompt}"])
    listing = staff.get("/admin/spawner/agenttype/").content.decode()
    assert "not available: &#x27;no-such-agent-binary-xyz&#x27; is not on this server&#x27;s PATH" in listing
    page = staff.get(f"/admin/spawner/agenttype/{missing.id}/change/").content.decode()
    assert "not available: &#x27;no-such-agent-binary-xyz&#x27; is not on this server&#x27;s PATH" in page
    sh = staff.get(f"/admin/spawner/agenttype/{agent_types['sh'].id}/change/").content.decode()
    assert "available: /" in sh and "/sh" in sh


def test_a_type_without_a_schema_shows_an_empty_box_and_a_bad_schema_is_refused(staff, agent_types):
    page = staff.get(f"/admin/spawner/agenttype/{agent_types['sh'].id}/change/").content.decode()
    box = page.split('name="response_schema"', 1)[1].split("</textarea>", 1)[0]
    assert box.split(">", 1)[1].strip() == "", box
    response = staff.post("/admin/spawner/agenttype/add/", form(response_schema="{not json"))
    assert response.status_code == 200 and "Enter a valid JSON." in response.content.decode()
    response = staff.post("/admin/spawner/agenttype/add/", form(response_schema=""))
    assert response.status_code == 302 and AgentType.objects.get(name="tool").response_schema is None
