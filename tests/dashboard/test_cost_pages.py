"""Cost everywhere it shows: run rows, the run page, the batch header and its budget bar, the
plan's estimate and the confirmation above SPAWNER_CONFIRM_COST_USD, the JSON summary, the export."""

from __future__ import annotations

import json

from spawner.core import aggregation
from spawner.models import AgentRun, Batch, RunAttempt, UserBudget

BUDGETED = """\
name: budgeted
agent: sh
budget_usd: 2.0
tasks:
  - {key: build, prompt: "echo build"}
  - {key: lint, prompt: "echo lint"}
  - {key: test, prompt: "echo test"}
"""

KNOWN = {
    "input_tokens": 1000,
    "output_tokens": 200,
    "cache_read_tokens": 0,
    "cache_write_tokens": 0,
    "cost_usd": 0.5,
    "models": ["claude-sonnet-4-5"],
    "turns": 2,
    "source": "cli",
    "cost_note": "",
}
UNKNOWN = {**KNOWN, "cost_usd": None, "models": ["llama-local"], "source": "api"}
UNKNOWN["cost_note"] = "no price for model 'llama-local' in the price table"


def with_usage(batch: Batch) -> None:
    AgentRun.objects.filter(batch=batch, key="build").update(usage=KNOWN, cost_usd=0.5)
    AgentRun.objects.filter(batch=batch, key="lint").update(usage=UNKNOWN, cost_usd=None)


def test_run_rows_and_the_header_show_tokens_cost_and_the_budget_bar(signed_in, member, make_batch):
    batch = make_batch(member, BUDGETED)
    with_usage(batch)
    html = signed_in.get(f"/batches/{batch.id}/").content.decode()
    row = html.split('id="run-', 1)[1]
    assert '<span class="cost">$0.5000</span>' in html and "1.2k tok" in html
    assert '<span class="cost unknown" title="no price for model &#x27;llama-local&#x27; in the price table">' in html
    assert "cost unknown" in html and row
    header = html.split('id="batch-header"', 1)[1].split("</section>", 1)[0]
    assert "$0.5000" in header and "+ 1 unknown" in header
    assert "Budget: $0.5000 of $2.00" in header and 'style="width: 25.00%"' in header


def test_a_batch_without_usage_or_budget_shows_dashes_and_no_bar(signed_in, member, make_batch):
    batch = make_batch(member)
    html = signed_in.get(f"/batches/{batch.id}/").content.decode()
    assert "budget-bar" not in html and "no usage reported (yet)" in html


def test_the_run_page_shows_the_runs_and_each_attempts_cost(signed_in, member, make_batch):
    batch = make_batch(member, BUDGETED)
    with_usage(batch)
    run = batch.runs.get(key="lint")
    from tests.dashboard.conftest import move

    move(run, "running")
    RunAttempt.objects.filter(run=run).update(usage=UNKNOWN)
    html = signed_in.get(f"/runs/{run.id}/").content.decode()
    header = html.split('id="run-cost"', 1)[1].split("</div>", 1)[0]
    assert "cost unknown" in header and "llama-local" in header
    attempts = html.split('id="attempts"', 1)[1]
    assert "cost unknown" in attempts


def test_the_json_summary_has_tokens_and_cost(signed_in, member, make_batch):
    batch = make_batch(member, BUDGETED)
    with_usage(batch)
    data = json.loads(signed_in.get(f"/batches/{batch.id}.json").content)
    runs = {r["key"]: r for r in data["runs"]}
    assert runs["build"]["tokens"] == 1200 and runs["build"]["cost_usd"] == 0.5
    assert runs["lint"]["cost_usd"] is None and "llama-local" in runs["lint"]["cost_note"]
    assert data["cost"]["spent_usd"] == 0.5 and data["cost"]["unknown_runs"] == 1 and data["cost"]["budget_usd"] == 2.0


def test_the_markdown_export_names_each_agents_cost():
    runs = [
        aggregation.RunResult(key="a", status="succeeded", result={"summary": "ok"}, usage=KNOWN, cost_usd=0.5),
        aggregation.RunResult(key="b", status="succeeded", result={"summary": "ok"}, usage=UNKNOWN),
    ]
    data = aggregation.aggregate("all", runs).as_data()
    text = aggregation.to_markdown(data, title="t")
    assert "1200 tokens, $0.5000" in text
    assert "cost unknown: no price for model 'llama-local'" in text


# --- the new-batch page ----------------------------------------------------------------------


def spec_with_estimate(usd: float) -> str:
    return f"name: dear\nagent: sh\ntasks:\n  - {{key: a, prompt: 'echo a', estimate_usd: {usd}}}\n"


def test_the_plan_shows_the_estimated_cost(signed_in, agent_types):
    html = signed_in.post(
        "/batches/new/", {"source": "yaml", "action": "plan", "spec_text": spec_with_estimate(0.25)}
    ).content.decode()
    assert 'id="plan-cost"' in html and "$0.2500" in html and "cost-confirm" not in html


def test_a_launch_above_the_threshold_asks_for_a_confirmation(signed_in, agent_types, settings):
    settings.SPAWNER = {**settings.SPAWNER, "CONFIRM_COST_USD": 1.0}
    text = spec_with_estimate(3)
    response = signed_in.post("/batches/new/", {"source": "yaml", "action": "launch", "spec_text": text})
    html = response.content.decode()
    assert response.status_code == 400 and not Batch.objects.exists()
    assert 'id="cost-confirm"' in html and "the estimated cost $3.00 is above $1.00" in html
    assert "Tick the box, then launch again." in html
    response = signed_in.post(
        "/batches/new/", {"source": "yaml", "action": "launch", "spec_text": text, "confirm_cost": "1"}
    )
    assert response.status_code == 302 and Batch.objects.count() == 1


def fan_out(count: int, agent: str) -> str:
    tasks = "".join(f"  - {{key: t{i}, prompt: 'review part {i}'}}\n" for i in range(count))
    return f"name: fan-out\nagent: {agent}\ntasks:\n{tasks}"


def test_a_first_fan_out_of_a_paid_agent_asks_for_a_confirmation_though_its_cost_is_unknown(
    signed_in, agent_types, settings
):
    """No estimate_usd and no past run: the estimate is $0 known + N unknown. Many runs of an agent
    that spends money (its output reports usage) still need a person's yes before they start."""
    from spawner.models import AgentType

    AgentType.objects.create(name="paid", argv=["sh", "-c", "{prompt}"], output_format="claude-json")
    settings.SPAWNER = {**settings.SPAWNER, "CONFIRM_UNKNOWN_RUNS": 10}
    page = {"source": "yaml", "action": "launch"}
    response = signed_in.post("/batches/new/", {**page, "spec_text": fan_out(10, "paid")})
    html = response.content.decode()
    assert response.status_code == 400 and not Batch.objects.exists()
    assert "10 runs of agents that report a cost have no estimate" in html and 'id="cost-confirm"' in html
    # Nine of them, or ten of a plain command (it reports no usage): no question asked.
    for spec_text in (fan_out(9, "paid"), fan_out(10, "sh")):
        response = signed_in.post("/batches/new/", {**page, "spec_text": spec_text})
        assert response.status_code == 302, response.content.decode()[-2000:]
    response = signed_in.post("/batches/new/", {**page, "spec_text": fan_out(10, "paid"), "confirm_cost": "1"})
    assert response.status_code == 302 and Batch.objects.count() == 3


def test_the_daily_budget_refusal_shows_on_the_page(signed_in, member, agent_types):
    UserBudget.objects.create(user=member, daily_usd=1.0)
    response = signed_in.post(
        "/batches/new/", {"source": "yaml", "action": "launch", "spec_text": spec_with_estimate(1.5)}
    )
    html = response.content.decode()
    assert response.status_code == 400 and not Batch.objects.exists()
    assert "launch refused: daily budget of $1.00 would be exceeded" in html and "$1.50" in html


def test_the_live_run_row_carries_the_cost(member, make_batch):
    from django.template.loader import render_to_string

    from dashboard.pages import queries

    batch = make_batch(member, BUDGETED)
    with_usage(batch)
    rows = {r.key: render_to_string("dashboard/batch.html#run-row", {"run": r}) for r in queries.grid_runs(batch.id)}
    assert "$0.5000" in rows["build"] and "cost unknown" in rows["lint"] and "no usage reported" in rows["test"]


def test_the_price_table_is_in_the_admin_seeded_and_dated(client, db):
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_superuser("ada", password="pw-ada-12345"))
    html = client.get("/admin/spawner/modelprice/").content.decode()
    assert "claude-sonnet-4*" in html and "gpt-5" in html and "Nov. 26, 2026" in html
    assert client.get("/admin/spawner/userbudget/add/").status_code == 200


def test_the_form_builder_sets_a_budget_and_shows_its_error_on_the_field(signed_in, agent_types):
    from tests.dashboard.test_new_batch import form_data

    html = signed_in.post("/batches/new/", form_data({"key": "a", "prompt": "echo a"}, budget_usd="2.5")).content
    assert b"budget_usd: 2.5" in html and b'id="plan-cost"' in html
    response = signed_in.post("/batches/new/", form_data({"key": "a", "prompt": "echo a"}, budget_usd="-1"))
    assert response.status_code == 400 and "must be between 0 and 1000000" in response.content.decode()
