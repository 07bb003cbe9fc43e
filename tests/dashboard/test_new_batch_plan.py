"""The new-batch plan never promises what launch refuses; errors come all at once, in the form's words."""

from __future__ import annotations

import html as html_lib
import re
import shutil
from pathlib import Path

import pytest

from spawner import services
from spawner.models import AgentType, Batch, UserBudget
from tests.conftest import ROOT
from tests.dashboard.test_new_batch import errors_of, form_data

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def text_of(html: str) -> str:
    return html_lib.unescape(re.sub(r"<[^>]+>", "", html))


def launch_checks(html: str) -> dict[str, tuple[bool, str]]:
    """The plan's "before launch" checks: name -> (passed, detail)."""
    block = html.split('id="launch-checks"', 1)[1].split("</ul>", 1)[0]
    found = {}
    for cls, body in re.findall(r'<li class="(ok|bad)"[^>]*>(.*?)</li>', block, re.S):
        name, _, detail = text_of(body).partition(":")
        found[name.strip(" ✓✗")] = (cls == "ok", detail.strip())
    return found


def plan_launch_button(html: str) -> str:
    """The plan's launch button as written (disabled or not)."""
    plan = html.split('id="plan"', 1)[1].split("</section>", 1)[0]
    return re.search(r"<button[^>]*>Launch this plan</button>", plan).group(0)


def summary(html: str) -> list[tuple[str, str, str]]:
    """The error summary: (link target, label, message) for each line."""
    if 'id="spec-errors"' not in html:
        return []
    block = html.split('id="spec-errors"', 1)[1].split("</div>", 1)[0]
    found = []
    for item in re.findall(r"<li>(.*?)</li>", block, re.S):
        target = re.search(r'href="#([^"]+)"', item)
        label, message = re.match(r"<(?:a|strong)[^>]*>(.*?)</(?:a|strong)>: (.*)", item, re.S).groups()
        found.append((target.group(1) if target else "", text_of(label), text_of(message)))
    return found


@pytest.fixture
def admin_client(client, admin):
    client.force_login(admin)
    return client


@pytest.fixture
def presets(agent_types):
    """The preset agent types the examples name (a transactional test before may have emptied them)."""
    from io import StringIO

    from django.core.management import call_command

    call_command("spawner_presets", stdout=StringIO())


def test_an_unavailable_agent_type_fails_its_check_and_disables_launch_with_the_reason(signed_in, agent_types):
    AgentType.objects.create(name="ghost", argv=["no-such-binary-here", "{prompt}"])
    data = form_data({"key": "a", "agent": "ghost", "prompt": "x"}, {"key": "b", "prompt": "y"})
    html = signed_in.post("/batches/new/", data).content.decode()
    ok, detail = launch_checks(html)["Agents available"]
    assert not ok and "ghost for a: 'no-such-binary-here' is not on this server's PATH" in detail
    assert "disabled" in plan_launch_button(html) and 'value="launch"' not in plan_launch_button(html)
    assert "Launch is disabled" in text_of(html.split('id="launch-refused"', 1)[1][:600])
    assert "not available on this server" in errors_of(html, "t0", "agent")
    build = html.split('id="build-form"', 1)[1].split("</form>", 1)[0]
    assert re.search(r'value="launch"[^>]* disabled data-refused', build), "the form's own Launch is disabled too"
    assert summary(html) == []  # not a mistake in the spec: said by the plan's check
    # Clicking the form's own Launch button anyway: refused, nothing stored.
    assert signed_in.post("/batches/new/", {**data, "action": "launch"}).status_code == 400
    assert not Batch.objects.exists()


def test_a_plan_whose_checks_all_pass_launches(signed_in, agent_types, settings, tmp_path):
    settings.SPAWNER_WORKDIR = tmp_path
    data = form_data({"key": "a", "prompt": "echo a"}, {"key": "b", "prompt": "echo b", "depends_on": "a"})
    html = signed_in.post("/batches/new/", data).content.decode()
    checks = launch_checks(html)
    assert set(checks) == {"Permission to launch", "Agents available", "Directories"}
    assert all(ok for ok, _ in checks.values()), checks
    assert "disabled" not in plan_launch_button(html)
    assert signed_in.post("/batches/new/", {**data, "action": "launch"}).status_code == 302


def test_an_admin_only_type_is_planned_for_a_member_and_launch_is_disabled(signed_in, agent_types):
    data = form_data({"key": "a", "agent": "shell", "prompt": "echo a"})
    html = signed_in.post("/batches/new/", data).content.decode()
    ok, detail = launch_checks(html)["Admins only"]
    assert not ok and "may only be launched by an admin" in detail
    assert "may only be launched by an admin" in errors_of(html, "t0", "agent")
    assert "disabled" in plan_launch_button(html)
    assert signed_in.post("/batches/new/", {**data, "action": "launch"}).status_code == 400
    assert not Batch.objects.exists()


def test_an_admin_only_setting_beside_another_error_is_one_answer(signed_in, agent_types):
    text = "name: x\nagent: shell\ntasks:\n  - {key: a, prompt: x, depends_on: [zzz]}\n"
    html = signed_in.post("/batches/new/", {"source": "yaml", "action": "plan", "spec_text": text}).content.decode()
    messages = [m for _, _, m in summary(html)]
    assert any("may only be launched by an admin" in m for m in messages)
    assert any("unknown dependency 'zzz'" in m for m in messages)
    assert 'id="plan"' not in html


def test_the_daily_budget_is_checked_in_the_plan(signed_in, member, agent_types, settings, tmp_path):
    settings.SPAWNER_WORKDIR = tmp_path
    UserBudget.objects.create(user=member, daily_usd=1.0)
    text = "name: x\nagent: sh\ntasks:\n  - {key: a, prompt: x, estimate_usd: 5}\n"
    html = signed_in.post("/batches/new/", {"source": "yaml", "action": "plan", "spec_text": text}).content.decode()
    ok, detail = launch_checks(html)["Daily budget"]
    assert not ok and "daily budget of $1.00 would be exceeded" in detail
    assert "disabled" in plan_launch_button(html)
    cheap = text.replace("estimate_usd: 5", "estimate_usd: 0.5")
    html = signed_in.post("/batches/new/", {"source": "yaml", "action": "plan", "spec_text": cheap}).content.decode()
    assert launch_checks(html)["Daily budget"] == (True, "within it: $1.00 left today")


def test_a_cwd_outside_the_base_directory_says_what_to_write_without_the_servers_path(
    signed_in, agent_types, settings, tmp_path
):
    settings.SPAWNER_WORKDIR = tmp_path / "base"
    (tmp_path / "base").mkdir()
    text = "name: x\ncwd: ..\nagent: sh\ntasks:\n  - {key: a, prompt: x}\n"
    html = signed_in.post("/batches/new/", {"source": "yaml", "action": "plan", "spec_text": text}).content.decode()
    ok, detail = launch_checks(html)["Directories"]
    assert not ok and "write '.' for the base directory itself" in detail
    assert str(tmp_path) not in html
    missing = text.replace("cwd: ..", "cwd: nowhere")
    html = signed_in.post("/batches/new/", {"source": "yaml", "action": "plan", "spec_text": missing}).content.decode()
    assert "directory 'nowhere' does not exist" in launch_checks(html)["Directories"][1]
    assert str(tmp_path) not in html


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_plans_with_checks_that_say_whether_it_launches(admin_client, presets, settings, example):
    """From the repository root (the browser's default base directory), as an admin: every check
    passes, except where this server lacks what the example needs (then the check says which)."""
    settings.SPAWNER_WORKDIR = ROOT
    AgentType.objects.get_or_create(name="coding-demo", defaults={"argv": ["python3", "x"], "prompt_via": "stdin"})
    text = example.read_text()
    html = admin_client.post("/batches/new/", {"source": "yaml", "action": "plan", "spec_text": text}).content.decode()
    assert summary(html) == []
    checks = launch_checks(html)
    agents = {t.agent for t in services.spec_load(text, is_admin=True).tasks}
    runnable = all(AgentType.objects.filter(name=a).first() and AgentType.objects.get(name=a).available for a in agents)
    assert checks["Agents available"][0] == runnable, checks
    if example.stem == "parallel-coding":
        return  # its repository and agent type come from `manage.py spawner_demo` (the browser journey makes them)
    assert checks["Directories"] == (
        True,
        "every working directory exists inside the base directory, and every path prompt stays in it",
    )
    assert ("disabled" in plan_launch_button(html)) == (not runnable)


def test_claude_review_without_claude_says_so_in_the_plan(admin_client, presets, settings):
    if shutil.which("claude"):
        pytest.skip("the claude CLI is installed here")
    settings.SPAWNER_WORKDIR = ROOT
    text = (ROOT / "examples" / "claude-review.yaml").read_text()
    html = admin_client.post("/batches/new/", {"source": "yaml", "action": "plan", "spec_text": text}).content.decode()
    ok, detail = launch_checks(html)["Agents available"]
    assert not ok
    assert detail == (
        "not available here: claude-code for security, correctness, tests, synthesis: "
        "'claude' is not on this server's PATH"
    )


def test_a_spec_file_inside_the_base_directory_means_the_same_in_the_terminal(presets, settings, tmp_path):
    settings.SPAWNER_WORKDIR = ROOT
    assert services.spec_base_dir(ROOT / "examples" / "review.yaml") == ROOT
    assert services.spec_base_dir(tmp_path / "mine.yaml") == tmp_path
    batch_spec = services.spec_load((ROOT / "examples" / "review.yaml").read_text(), is_admin=True)
    batch_cwd, _ = services.batch_check(batch_spec, services.spec_base_dir(ROOT / "examples" / "review.yaml"))
    assert batch_cwd == ROOT


# --- errors: all at once, in the form's words, linked from the summary -------------------------


def test_three_blank_rows_and_no_name_give_two_problems_each_linked_to_its_field(signed_in, agent_types):
    blank = {"key": "", "agent": "", "prompt": ""}
    response = signed_in.post("/batches/new/", form_data(blank, blank, blank, name=""))
    assert response.status_code == 400
    html = response.content.decode()
    assert summary(html) == [
        ("id_name", "Name", "This field is required."),
        ("id_t0-key", "Task 1: Key", "add a task: fill in its key, agent and prompt"),
    ]
    assert html.count('class="task-row"') == 3


def test_every_error_comes_at_once_in_the_forms_words(signed_in, agent_types):
    data = form_data(
        {"key": "a", "prompt": "x", "depends_on": "b"},
        {"key": "b", "prompt": "y", "depends_on": "a, zzz"},
        {"key": "c", "agent": "", "prompt": "z"},
        {"key": "b", "prompt": "again"},
        name="",
        max_parallel="0",
    )
    html = signed_in.post("/batches/new/", data).content.decode()
    found = summary(html)
    labels = [label for _, label, _ in found]
    assert labels == [
        "Name",
        "Max parallel",
        "Task 1: Depends on",
        "Task 2: Depends on",
        "Task 3: Agent",
        "Task 4: Key",
    ], found
    said = " | ".join(message for _, _, message in found)
    assert "pick an agent" in said and "set 'agent' on the batch" not in said
    assert "unknown dependency 'zzz': no task has this key" in said
    assert "dependency cycle: a → b → a" in said
    assert "duplicate key: also used by task 2 ('b')" in said
    assert "tasks[" not in said and "line " not in said
    assert found[4][0] == "id_t2-agent"


def test_yaml_errors_point_at_the_line_of_their_field(signed_in, agent_types):
    text = "name: x\nagent: sh\ntasks:\n  - key: a\n    prompt: hi\n    depends_on: [zzz]\n    timeout: soon\n"
    html = signed_in.post("/batches/new/", {"source": "yaml", "action": "plan", "spec_text": text}).content.decode()
    found = summary(html)
    assert [(t, label) for t, label, _ in found] == [
        ("id_spec_text", "Line 7, task 'a', timeout"),
        ("id_spec_text", "Line 6, task 'a', depends_on"),
    ]
    assert 'data-line="6"' in html and "tasks[0]" not in text_of(html.split('id="spec-errors"', 1)[1][:2000])


def test_no_aggregation_is_called_all_as_the_result_page_calls_it(signed_in, agent_types):
    html = signed_in.get("/batches/new/").content.decode()
    select = html.split('name="aggregation"', 1)[1].split("</select>", 1)[0]
    assert ">none<" not in select and 'value="all" selected' in select
    assert "all, side by side" in select


def test_the_admin_only_demo_is_disabled_for_a_member_with_the_reason(signed_in, client, admin, agent_types):
    html = signed_in.get("/batches/new/").content.decode()
    assert 'href="?start=demo"' not in html and "admins only: its steps run in the server&#x27;s shell" in html
    assert signed_in.get("/batches/new/?start=demo").content.decode().count("echo explore-api") == 0
    client.force_login(admin)
    assert 'href="?start=demo"' in client.get("/batches/new/").content.decode()


def test_the_page_includes_its_script_and_a_spot_for_the_plan_graph():
    template = (ROOT / "templates" / "dashboard" / "batch_new.html").read_text()
    assert "{% block plan_graph %}" in template and "newbatch.js" in template
    assert Path(ROOT / "static" / "newbatch.js").is_file()


def test_the_terminals_plan_says_what_a_launch_would_refuse(agent_types, tmp_path, capsys):
    from django.core.management import call_command

    AgentType.objects.create(name="ghost", argv=["no-such-binary-here", "{prompt}"])
    path = tmp_path / "ghost.yaml"
    path.write_text("name: g\ncwd: nowhere\ntasks:\n  - {key: a, agent: ghost, prompt: hi}\n")
    call_command("spawn", str(path), "--plan")
    out = capsys.readouterr().out
    assert "no   agents available: not available here: ghost for a" in out
    assert "no   directories: cwd: directory" in out and "nowhere does not exist" in out


def test_with_no_coding_agent_the_starting_points_say_they_cannot_launch(signed_in, presets):
    from spawner.models import AgentType

    coding = ("claude-code", "codex", "gemini", "aider")
    if any(t.available for t in AgentType.objects.filter(name__in=coding)):
        pytest.skip("a coding agent is installed here")
    html = signed_in.get("/batches/new/").content.decode()
    assert "No coding agent can run on this server (claude-code, codex, gemini, aider)" in html
    page = signed_in.get("/batches/new/?start=review").content.decode()
    data = {"source": "form", "action": "plan", "rows": re.findall(r'name="rows" value="(\w+)"', page)}
    for name, value in re.findall(r'name="([\w-]+)" value="([^"]*)"', page):
        data.setdefault(name, html_lib.unescape(value))
    for name, value in re.findall(r'<textarea name="([\w-]+)"[^>]*>\s*(.*?)</textarea>', page, re.S):
        data[name] = html_lib.unescape(value)
    for name, value in re.findall(r'<select name="([\w-]+)"[^>]*>.*?<option value="([^"]*)" selected', page, re.S):
        data[name] = value
    response = signed_in.post("/batches/new/", data)
    planned = response.content.decode()
    assert launch_checks(planned)["Agents available"][0] is False
    assert "disabled" in plan_launch_button(planned)
