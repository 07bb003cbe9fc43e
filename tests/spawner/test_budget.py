"""Budgets: the pure rules, the spec's fields, the plan's estimate, a person's day, and a real
cluster stopping a batch at its budget."""

from __future__ import annotations

import datetime
import json

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from spawner import selectors, services, spec
from spawner.core import budget
from spawner.core.budget import BudgetView
from spawner.errors import SpecInvalid
from spawner.models import AgentRun, AgentType, Escalation, UserBudget
from spawner.states import RunStatus
from tests.spawner.helpers import launch, wait_batch, wait_run

P, Q, R = RunStatus.PENDING, RunStatus.QUEUED, RunStatus.RUNNING


# --- the pure rules -----------------------------------------------------------------------


def test_a_run_starts_only_while_spent_plus_running_estimates_plus_its_own_fit():
    view = BudgetView(budget_usd=1.0, spent_usd=0.4, estimates={"a": 0.4, "b": 0.4, "c": 0.4})
    kept = budget.apply({"a": P, "b": P, "c": P}, [("a", 0), ("b", 0)], view)
    assert kept.start == [("a", 0)] and kept.reached
    assert kept.skip == ["b", "c"] and kept.cancel == []


def test_running_estimates_count_and_cancel_running_stops_them():
    view = BudgetView(budget_usd=1.0, spent_usd=0.7, estimates={"r": 0.5}, cancel_running=True)
    kept = budget.apply({"r": R, "p": P}, [], view)
    assert kept.reached and kept.skip == ["p"] and kept.cancel == ["r"]


def test_unknown_estimates_count_as_zero_and_an_exact_fit_starts():
    view = BudgetView(budget_usd=1.2, spent_usd=0.8, estimates={"a": 0.4, "b": None})
    kept = budget.apply({"a": P, "b": P}, [("a", 0), ("b", 0)], view)
    assert kept.start == [("a", 0), ("b", 0)] and not kept.reached


def test_a_tasks_own_budget_skips_only_that_task():
    view = BudgetView(budget_usd=None, estimates={"a": 2.0, "b": 2.0}, run_budgets={"a": 1.0})
    kept = budget.apply({"a": P, "b": P}, [("a", 0), ("b", 0)], view)
    assert kept.start == [("b", 0)] and kept.skip == ["a"] and not kept.reached


def test_estimates_and_the_daily_refusal():
    assert budget.estimate_for([0.1, 0.5, 0.3]) == 0.3 and budget.estimate_for([]) is None
    assert budget.batch_estimate({"a": 0.5, "b": None, "c": 0.25}) == (0.75, ["b"])
    assert budget.daily_refusal(daily_usd=None, spent_today=9, estimate=9) == ""
    assert budget.daily_refusal(daily_usd=1.0, spent_today=0.5, estimate=0.5) == ""
    message = budget.daily_refusal(daily_usd=1.0, spent_today=0.9, estimate=0.5)
    assert message == (
        "daily budget of $1.00 would be exceeded: spent today $0.9000 + this batch's estimate $0.5000 = $1.40"
    )


def test_a_launch_needs_a_confirmation_above_the_threshold_or_for_many_paid_runs_of_unknown_cost():
    ask = budget.confirm_reason
    assert ask(estimate=5.0, threshold=5.0, unknown_paid=9, unknown_limit=10) == ""
    assert ask(estimate=5.01, threshold=5.0, unknown_paid=0, unknown_limit=10) == (
        "the estimated cost $5.01 is above $5.00"
    )
    assert ask(estimate=0.0, threshold=5.0, unknown_paid=10, unknown_limit=10).startswith(
        "10 runs of agents that report a cost have no estimate"
    )
    assert ask(estimate=0.0, threshold=None, unknown_paid=75, unknown_limit=None) == ""  # both off
    assert ask(estimate=0.0, threshold=None, unknown_paid=75, unknown_limit=-1) == ""  # 0 or less: off
    assert ask(estimate=0.0, threshold=None, unknown_paid=12, unknown_limit=10).endswith(
        "with a known cost): 10 or more need a confirmation"
    )


# --- the spec -----------------------------------------------------------------------------


def load(data: dict):
    return spec.validate(data, agents={"sh": spec.AgentInfo("sh")}, roles={})


def test_spec_budget_fields_are_validated_with_named_errors():
    ok = load(
        {
            "name": "b",
            "agent": "sh",
            "budget_usd": 2.5,
            "on_budget": "cancel_running",
            "tasks": [{"key": "a", "budget_usd": 1, "estimate_usd": 0}],
        }
    )
    assert ok.budget_usd == 2.5 and ok.on_budget == "cancel_running"
    assert ok.tasks[0].budget_usd == 1.0 and ok.tasks[0].estimate_usd == 0.0
    with pytest.raises(SpecInvalid) as exc:
        load(
            {
                "name": "b",
                "agent": "sh",
                "budget_usd": -1,
                "on_budget": "panic",
                "tasks": [{"key": "a", "budget_usd": 0, "estimate_usd": "lots"}, {"key": "b", "budget_usd": 1e12}],
            }
        )
    said = {(e.where, e.field): e.message for e in exc.value.errors}
    assert said[("batch", "budget_usd")].startswith("must be between 0")
    assert "skip_pending, cancel_running" in said[("batch", "on_budget")]
    assert said[("task 'a' (tasks[0])", "budget_usd")].startswith("must be more than 0")
    assert said[("task 'a' (tasks[0])", "estimate_usd")].startswith("must be a number")
    assert said[("task 'b' (tasks[1])", "budget_usd")].startswith("must be between 0 and 1000000")


# --- the plan's estimate and a person's day -----------------------------------------------


def past_run(batch_owner, tmp_path, cost: float, key="old", role=""):
    batch = launch(json.dumps({"name": "past", "agent": "sh", "tasks": [{"key": key, "prompt": "x"}]}), tmp_path)
    batch.owner = batch_owner
    batch.save(update_fields=["owner"])
    AgentRun.objects.filter(batch=batch).update(
        cost_usd=cost,
        usage={"cost_usd": cost, "input_tokens": 10},
        finished_at=timezone.now(),
        role=role,
        status=RunStatus.SUCCEEDED,
    )
    return batch


def test_the_plan_estimates_from_declared_estimates_and_past_runs(db, tmp_path, agent_types):
    for cost in (0.1, 0.3, 0.2):
        past_run(None, tmp_path, cost)
    batch_spec = services.spec_load(
        json.dumps(
            {
                "name": "e",
                "agent": "sh",
                "budget_usd": 0.4,
                "tasks": [{"key": "a", "prompt": "x"}, {"key": "b", "prompt": "y", "estimate_usd": 0.25}],
            }
        ),
        is_admin=True,
    )
    cost = selectors.plan_cost(batch_spec)
    assert cost["per_task"] == {"a": pytest.approx(0.2), "b": 0.25}
    assert cost["estimate_usd"] == pytest.approx(0.45) and cost["unknown"] == []
    assert cost["over_budget"] and cost["label"] == "$0.4500"


def test_the_daily_budget_refuses_a_launch_naming_the_budget_and_the_figures(db, tmp_path, agent_types):
    user = get_user_model().objects.create_user("spender")
    UserBudget.objects.create(user=user, daily_usd=1.0)
    past_run(user, tmp_path, 0.9)
    text = json.dumps({"name": "n", "agent": "sh", "tasks": [{"key": "a", "prompt": "x", "estimate_usd": 0.5}]})
    batch_spec = services.spec_load(text, is_admin=True)
    with pytest.raises(SpecInvalid) as exc:
        services.batch_launch(batch_spec=batch_spec, base_dir=tmp_path, owner=user)
    (error,) = exc.value.errors
    assert error.field == "budget"
    assert error.message == (
        "launch refused: daily budget of $1.00 would be exceeded: spent today $0.9000 "
        "+ this batch's estimate $0.5000 = $1.40"
    )
    # yesterday's spending does not count; a cheaper batch fits
    AgentRun.objects.filter(batch__owner=user).update(finished_at=timezone.now() - datetime.timedelta(days=2))
    assert services.batch_launch(batch_spec=batch_spec, base_dir=tmp_path, owner=user).budget_usd is None


# --- a real cluster -----------------------------------------------------------------------


def costing(cost: float, then: str = "") -> str:
    return f'echo \'{{"summary": "done", "cost": {cost}}}\' > $SPAWNER_RESULT_FILE{then}'


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_batch_stops_at_its_budget_runs_skipped_and_escalated(cluster, tmp_path):
    AgentType.objects.get_or_create(name="sh", defaults={"argv": ["sh", "-c", "{prompt}"]})
    spec_data = {
        "name": "budgeted",
        "agent": "sh",
        "max_parallel": 1,
        "budget_usd": 1.0,
        "tasks": [{"key": f"t{i}", "prompt": costing(0.4)} for i in range(1, 6)],
    }
    batch = wait_batch(launch(json.dumps(spec_data), tmp_path), timeout=60)

    runs = {r.key: r for r in AgentRun.objects.filter(batch=batch)}
    assert [runs[k].status for k in ("t1", "t2")] == ["succeeded", "succeeded"]
    assert runs["t1"].cost_usd == 0.4 and runs["t2"].usage["source"] == "result-file"
    for key in ("t3", "t4", "t5"):
        assert runs[key].status == "skipped" and runs[key].error.startswith("budget: the batch's budget $1.00")
    (escalation,) = Escalation.objects.filter(batch=batch)
    assert escalation.kind == Escalation.Kind.BUDGET and escalation.state == Escalation.State.OPEN
    assert "spent $0.8000" in escalation.reason and "3 runs skipped" in escalation.reason
    summary = selectors.batch_summary(batch)
    assert summary["cost"]["spent_usd"] == pytest.approx(0.8) and summary["cost"]["budget_usd"] == 1.0


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_on_budget_cancel_running_stops_the_running_runs_too(cluster, tmp_path):
    AgentType.objects.get_or_create(name="sh", defaults={"argv": ["sh", "-c", "{prompt}"]})
    spec_data = {
        "name": "cancel at budget",
        "agent": "sh",
        "max_parallel": 2,
        "budget_usd": 1.0,
        "on_budget": "cancel_running",
        "tasks": [
            {"key": "slow", "prompt": "sleep 30", "estimate_usd": 0.5},
            {"key": "dear", "prompt": costing(0.7, "; sleep 0.5")},
            {"key": "later", "prompt": "true", "depends_on": ["dear"]},
        ],
    }
    batch = launch(json.dumps(spec_data), tmp_path)
    wait_run(batch, "slow", "running", timeout=30)
    batch = wait_batch(batch, timeout=60)
    runs = {r.key: r for r in AgentRun.objects.filter(batch=batch)}
    assert runs["dear"].status == "succeeded" and runs["dear"].cost_usd == 0.7
    assert runs["slow"].status == "cancelled" and runs["slow"].error.startswith("budget")
    assert runs["later"].status == "skipped" and runs["later"].error.startswith("budget")
    assert Escalation.objects.get(batch=batch).kind == "budget"


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_retry_the_budget_cannot_cover_is_not_started(cluster, tmp_path):
    AgentType.objects.get_or_create(name="sh", defaults={"argv": ["sh", "-c", "{prompt}"]})
    spec_data = {
        "name": "retry within budget",
        "agent": "sh",
        "budget_usd": 1.0,
        "retries": 3,
        "backoff": 0.1,
        "tasks": [{"key": "dear", "prompt": costing(0.6, "; exit 1")}],
    }
    batch = wait_batch(launch(json.dumps(spec_data), tmp_path), timeout=60)
    run = AgentRun.objects.get(batch=batch)
    assert run.status == "failed" and run.attempts.count() == 1, "a second $0.60 attempt would pass $1.00"
    assert "not retried: the budget does not cover another attempt" in run.error
    assert run.cost_usd == pytest.approx(0.6)


# --- the CLI ------------------------------------------------------------------------------


def test_the_cli_prints_spent_over_budget_live_and_cost_in_its_summary(agent_types, tmp_path):
    import io

    from rich.console import Console

    from spawner.management.commands import spawn

    text = json.dumps(
        {"name": "cli", "agent": "sh", "budget_usd": 1.0, "tasks": [{"key": "a", "prompt": "x"}, {"key": "b"}]}
    )
    batch = launch(text, tmp_path)
    AgentRun.objects.filter(batch=batch, key="a").update(
        cost_usd=0.4, usage={"cost_usd": 0.4, "input_tokens": 90, "output_tokens": 10}
    )
    AgentRun.objects.filter(batch=batch, key="b").update(
        usage={"cost_usd": None, "input_tokens": 5, "cost_note": "no price for model 'x' in the price table"}
    )
    command = spawn.Command()
    out = io.StringIO()
    command.console = Console(file=out, width=120, force_terminal=False)
    command.console.print(command._progress(batch))
    live = out.getvalue()
    assert "spent $0.4000 / budget $1.00 (1 run with cost unknown) · 105 tokens" in live
    assert "$0.4000" in live.split("\n", 2)[2] and "unknown" in live

    out.truncate(0)
    summary = selectors.batch_summary(batch)
    command._print_summary(summary)
    printed = out.getvalue()
    assert "tokens" in printed and "cost" in printed and "spent $0.4000 / budget $1.00" in printed
    assert summary["runs"][0]["tokens"] == 100 and summary["runs"][0]["cost_usd"] == 0.4
    assert json.loads(json.dumps(summary, default=str))["cost"]["spent_usd"] == 0.4


def test_the_cli_plan_prints_the_estimated_cost(agent_types, tmp_path, capsys):
    from django.core.management import call_command

    path = tmp_path / "p.yaml"
    path.write_text("name: p\nagent: sh\nbudget_usd: 0.5\ntasks:\n  - {key: a, prompt: x, estimate_usd: 0.75}\n")
    call_command("spawn", str(path), "--plan")
    out = capsys.readouterr().out
    assert "estimated cost: $0.7500 · budget $0.5000" in out and "over the batch's budget" in out


def test_the_cli_refuses_a_launch_that_needs_a_confirmation_until_given_confirm_cost(agent_types, tmp_path, capsys):
    from django.core.management import CommandError, call_command

    from spawner.models import Batch

    path = tmp_path / "dear.yaml"
    path.write_text("name: dear\nagent: sh\ntasks:\n  - {key: a, prompt: 'echo a', estimate_usd: 7}\n")
    call_command("spawn", str(path), "--plan")
    assert "the estimated cost $7.00 is above $5.00: launch with --confirm-cost" in capsys.readouterr().out
    with pytest.raises(CommandError, match=r"above \$5\.00: add --confirm-cost to launch it; nothing was launched"):
        call_command("spawn", str(path))
    assert not Batch.objects.exists()
