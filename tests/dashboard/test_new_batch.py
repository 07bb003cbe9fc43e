"""The new-batch page: rows, starting points, plan preview, errors next to their field, launch."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User

from spawner.models import AgentType, Batch, RunEvent


def form_data(*tasks: dict, action: str = "plan", **batch) -> dict:
    data = {
        "source": "form",
        "action": action,
        "name": "from the form",
        "mode": "parallel",
        "max_parallel": "3",
        "retries": "0",
        "timeout": "",
        "failure_policy": "continue",
        "aggregation": "",
        "rows": [],
    }
    data.update(batch)
    for i, task in enumerate(tasks):
        prefix = f"t{i}"
        data["rows"].append(prefix)
        row = {"agent": "sh", "priority": "P1", **task}
        data.update({f"{prefix}-{k}": v for k, v in row.items()})
    return data


def errors_of(html: str, prefix: str, field: str) -> str:
    """The error text rendered next to one field of one task row."""
    row = html.split(f'id="row-{prefix}"', 1)[1].split("</fieldset>", 1)[0]
    block = row.split(f'name="{prefix}-{field}"', 1)[0]
    found = re.findall(r'<ul class="errorlist"[^>]*>(.*?)</ul>', block.rsplit('class="field', 1)[-1], re.S)
    return " ".join(found)


def test_the_page_shows_empty_task_rows(signed_in, agent_types):
    html = signed_in.get("/batches/new/").content.decode()
    assert html.count('class="task-row"') == 3
    assert "Preview plan" in html


def test_a_row_can_be_added_without_a_reload(signed_in, agent_types):
    response = signed_in.get("/batches/new/row/", headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.count('class="task-row"') == 1 and "<html" not in html
    assert 'name="rows"' in html


@pytest.mark.parametrize("start", ["review", "pipeline", "waves", "race"])
def test_each_starting_point_fills_the_rows_and_plans(signed_in, agent_types, start):
    html = signed_in.get(f"/batches/new/?start={start}").content.decode()
    assert html.count('class="task-row"') >= 3


def test_unavailable_agent_types_are_labelled_in_the_choice(signed_in, agent_types):
    AgentType.objects.create(name="ghost", argv=["no-such-binary-here", "{prompt}"])
    html = signed_in.get("/batches/new/").content.decode()
    assert "ghost — not available: &#x27;no-such-binary-here&#x27; is not on this server&#x27;s PATH" in html
    assert "shell — admins only" in html


def test_the_plan_preview_shows_waves_critical_path_and_checks(signed_in, agent_types):
    data = form_data(
        {"key": "a", "prompt": "echo a"},
        {"key": "b", "prompt": "echo b", "depends_on": "a"},
        {"key": "c", "prompt": "echo c"},
    )
    response = signed_in.post("/batches/new/", data)
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="plan"' in html
    assert "Wave 1" in html and "Wave 2" in html
    assert "a → b" in html
    assert "Distinct file scopes" in html
    assert not Batch.objects.exists()


def test_blank_rows_are_ignored(signed_in, agent_types):
    data = form_data({"key": "a", "prompt": "echo a"}, {"key": "", "agent": "", "prompt": ""})
    assert signed_in.post("/batches/new/", data).status_code == 200


def test_launch_creates_the_batch_and_records_who(signed_in, member, agent_types, settings, tmp_path):
    settings.SPAWNER_WORKDIR = tmp_path
    data = form_data(
        {"key": "a", "prompt": "echo a"}, {"key": "b", "prompt": "echo b", "depends_on": "a"}, action="launch"
    )
    response = signed_in.post("/batches/new/", data)
    batch = Batch.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/batches/{batch.id}/"
    assert batch.owner == member
    assert batch.cwd == str(tmp_path)
    assert list(batch.runs.order_by("order").values_list("key", "depends_on")) == [("a", []), ("b", ["a"])]
    assert RunEvent.objects.get(kind="batch.launched").actor == member
    assert "depends_on:\n  - a" in batch.spec_text


def test_launch_needs_the_permission(client, viewer, agent_types):
    client.force_login(viewer)
    response = client.post("/batches/new/", form_data({"key": "a", "prompt": "echo a"}, action="launch"))
    assert response.status_code == 403
    assert not Batch.objects.exists()
    assert "disabled" in client.get("/batches/new/").content.decode().split('value="launch"')[1][:120]


def test_an_unknown_agent_type_is_shown_on_its_row(signed_in, agent_types):
    response = signed_in.post("/batches/new/", form_data({"key": "a", "agent": "nope", "prompt": "x"}))
    assert response.status_code == 400
    assert "Select a valid choice" in errors_of(response.content.decode(), "t0", "agent")


def test_a_cycle_is_shown_on_the_depends_on_field(signed_in, agent_types):
    data = form_data({"key": "a", "depends_on": "b", "prompt": "x"}, {"key": "b", "depends_on": "a", "prompt": "y"})
    html = signed_in.post("/batches/new/", data).content.decode()
    assert "dependency cycle" in errors_of(html, "t0", "depends_on") + errors_of(html, "t1", "depends_on")
    assert not Batch.objects.exists()


def test_an_unknown_dependency_is_shown_on_its_row(signed_in, agent_types):
    data = form_data({"key": "a", "prompt": "x"}, {"key": "b", "depends_on": "zzz", "prompt": "y"})
    html = signed_in.post("/batches/new/", data).content.decode()
    assert "unknown dependency &#x27;zzz&#x27;" in errors_of(html, "t1", "depends_on")
    assert errors_of(html, "t0", "depends_on") == ""


def test_an_unknown_dependency_does_not_hide_a_cycle_on_the_same_row(signed_in, agent_types):
    a, b = {"key": "a", "depends_on": "b, zzz", "prompt": "x"}, {"key": "b", "depends_on": "a", "prompt": "y"}
    html = signed_in.post("/batches/new/", form_data(a, b)).content.decode()
    row = errors_of(html, "t0", "depends_on")
    assert "unknown dependency &#x27;zzz&#x27;" in row
    assert "dependency cycle" in row + errors_of(html, "t1", "depends_on")


def test_a_file_conflict_is_shown_on_the_files_field(signed_in, agent_types):
    data = form_data({"key": "a", "files": "src/**", "prompt": "x"}, {"key": "b", "files": "src/app.py", "prompt": "y"})
    html = signed_in.post("/batches/new/", data).content.decode()
    assert "conflict" in errors_of(html, "t1", "files")


def test_a_bad_key_and_a_duplicate_key_are_shown_on_the_key_field(signed_in, agent_types):
    data = form_data({"key": "bad key!", "prompt": "x"}, {"key": "b", "prompt": "y"}, {"key": "b", "prompt": "z"})
    html = signed_in.post("/batches/new/", data).content.decode()
    assert "must be letters" in errors_of(html, "t0", "key")
    assert "duplicate key" in errors_of(html, "t2", "key")


def test_a_batch_field_error_is_shown_on_that_field(signed_in, agent_types):
    response = signed_in.post("/batches/new/", form_data({"key": "a", "prompt": "x"}, name="", max_parallel="0"))
    html = response.content.decode()
    assert response.status_code == 400
    assert "This field is required" in html
    assert "Ensure this value is greater than or equal to 1" in html


def test_an_admin_only_agent_type_is_refused_for_a_member(signed_in, agent_types):
    html = signed_in.post("/batches/new/", form_data({"key": "a", "agent": "shell", "prompt": "x"})).content.decode()
    assert "may only be launched by an admin" in errors_of(html, "t0", "agent")


def test_an_unavailable_agent_type_is_planned_but_not_launched(signed_in, agent_types):
    AgentType.objects.create(name="ghost", argv=["no-such-binary-here", "{prompt}"])
    data = form_data({"key": "a", "agent": "ghost", "prompt": "x"}, action="launch")
    html = signed_in.post("/batches/new/", data).content.decode()
    assert "not available on this server" in errors_of(html, "t0", "agent")
    assert 'id="plan"' in html
    assert not Batch.objects.exists()


def test_a_pasted_spec_is_planned_and_launched(signed_in, agent_types, settings, tmp_path):
    settings.SPAWNER_WORKDIR = tmp_path
    text = "name: pasted\nagent: sh\ntasks:\n  - {key: one, prompt: echo 1}\n  - {key: two, prompt: echo 2}\n"
    html = signed_in.post("/batches/new/", {"source": "yaml", "action": "plan", "spec_text": text}).content.decode()
    assert 'id="plan"' in html and "one" in html
    response = signed_in.post("/batches/new/", {"source": "yaml", "action": "launch", "spec_text": text})
    assert response.status_code == 302
    assert Batch.objects.get().spec_text == text


def test_an_uploaded_spec_is_read_and_shown(signed_in, agent_types):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("spec.yaml", b"name: up\nagent: sh\ntasks:\n  - {key: one, prompt: echo 1}\n")
    html = signed_in.post("/batches/new/", {"source": "yaml", "action": "plan", "spec_file": upload}).content.decode()
    assert 'id="plan"' in html
    assert "name: up" in html  # back in the text box, so "Launch" sends it again


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\ntasks: [\n", "not valid YAML or JSON"),
        ("name: x\nagent: sh\ntasks:\n  - {key: a, prompt: x, depends_on: [a]}\n", "cannot depend on itself"),
        ("name: x\ntasks:\n  - {key: a, agent: zork}\n", "unknown agent type &#x27;zork&#x27;"),
        ("- just a list\n", "must be a mapping"),
        ("", "paste a spec or choose a file"),
    ],
)
def test_a_pasted_spec_with_errors_says_where(signed_in, agent_types, text, message):
    response = signed_in.post("/batches/new/", {"source": "yaml", "action": "plan", "spec_text": text})
    assert response.status_code == 400
    assert message in response.content.decode()


def test_staff_may_use_the_shell_agent(client, agent_types):
    admin = User.objects.create_superuser("root", "", "pw-root-12345")
    client.force_login(admin)
    response = client.post("/batches/new/", form_data({"key": "a", "agent": "shell", "prompt": "x"}))
    assert response.status_code == 200


@pytest.mark.parametrize("start", ["review", "pipeline", "waves", "race", "demo"])
def test_each_starting_point_is_a_valid_spec(agent_types, start):
    import yaml

    from dashboard.pages import starters
    from spawner import services

    data = starters.build(start, services.agent_catalog(), services.role_templates(), is_admin=True)
    batch_spec = services.spec_load(yaml.safe_dump(data), is_admin=True)
    assert len(batch_spec.tasks) >= 3
    assert services.batch_plan(batch_spec).checks


def test_starting_points_never_hand_prose_to_a_tool(agent_types):
    """With no coding agent installed, a prose prompt must not go to pytest or ruff (they take it for a path)."""
    from dashboard.pages import starters
    from spawner import services

    data = starters.build("waves", services.agent_catalog(), services.role_templates(), is_admin=True)
    assert {t["agent"] for t in data["tasks"]} <= set(starters.CODING_AGENTS)


def test_a_launch_reads_the_pasted_spec_once(signed_in, agent_types, settings, tmp_path, monkeypatch):
    from spawner import spec

    settings.SPAWNER_WORKDIR = tmp_path
    parse, calls = spec.parse_text, []
    monkeypatch.setattr(spec, "parse_text", lambda text: calls.append(text) or parse(text))
    text = "name: once\nagent: sh\ntasks:\n  - {key: one, prompt: echo 1}\n"
    response = signed_in.post("/batches/new/", {"source": "yaml", "action": "launch", "spec_text": text})
    assert response.status_code == 302 and len(calls) == 1
    assert Batch.objects.get().spec == {"name": "once", "agent": "sh", "tasks": [{"key": "one", "prompt": "echo 1"}]}


def test_errors_go_to_the_row_their_index_or_key_names(agent_types):
    from dashboard.pages.forms import TaskForm, place_errors
    from spawner.spec import FieldError

    catalog = {"agents": {}, "roles": [], "is_admin": False}
    rows = [
        TaskForm({f"r{n}-key": key, f"r{n}-priority": "P1"}, prefix=f"r{n}", **catalog) for n, key in enumerate("ab")
    ]
    assert all(f.is_valid() for f in rows)
    errors = [
        FieldError("somewhere", "prompt", "too long", index=1),  # the index alone names the row
        FieldError("task 'a'", "cwd", "does not exist", task="a"),  # found after the check: the key names it
        FieldError("line 3, column 1", "", "not valid YAML"),
    ]
    general = place_errors(errors, None, rows)
    assert rows[1].errors["prompt"] == ["too long"]
    assert rows[0].errors["__all__"] == ["cwd: does not exist"]
    assert general == ["line 3, column 1: not valid YAML"]


def test_a_name_longer_than_its_column_is_shown_on_the_name_field(signed_in, agent_types):
    text = "name: " + "n" * 201 + "\nagent: sh\ntasks: [{key: a, prompt: x}]\n"
    response = signed_in.post("/batches/new/", {"source": "yaml", "action": "launch", "spec_text": text})
    assert response.status_code == 400 and "the maximum is 200" in response.content.decode()
    assert not Batch.objects.exists()


def test_a_row_with_thousands_of_patterns_is_refused_before_a_spec_is_written(signed_in, agent_types, monkeypatch):
    from spawner import spec

    monkeypatch.setattr(spec, "parse_text", lambda text: pytest.fail("a spec was written and read"))
    data = form_data({"key": "a", "prompt": "x", "files": "{{ v }}" * 16_000})
    response = signed_in.post("/batches/new/", data)
    assert response.status_code == 400
    assert "32001 patterns; the maximum is 100" in errors_of(response.content.decode(), "t0", "files")


def test_the_parallel_coding_starting_point_is_the_example_as_yaml(signed_in, agent_types):
    import html as html_lib

    import yaml

    from spawner import services

    page = signed_in.get("/batches/new/?start=coding").content.decode()
    assert "Parallel coding (no AI tool)" in page
    assert re.search(r'<details class="card" id="paste"[^>]* open', page), "the YAML card is the one open"
    text = html_lib.unescape(page.split('name="spec_text"', 1)[1].split(">", 1)[1].split("</textarea>", 1)[0])
    data = yaml.safe_load(text)
    assert data["workspace"] == {
        "repo": "var/demo-repo",
        "isolation": "worktree",
        "merge": "sequential",
        "scope": "warn",
    }
    assert data["cwd"] == "." and [t["key"] for t in data["tasks"]] == ["title", "greeting", "config", "usage"]
    AgentType.objects.get_or_create(name="coding-demo", defaults={"argv": ["python3", "x"]})
    assert services.spec_load(text, is_admin=False).workspace.isolated
