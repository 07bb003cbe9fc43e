"""Usage recorded at an attempt's end, from each source: the real CLIs' recorded output
(tests/fixtures/cli), the model runner's usage file, the result file's tokens / cost."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from spawner.engine import execution, usage
from spawner.models import AgentRun, AgentType, ModelPrice
from spawner.states import AttemptStatus
from tests.spawner.helpers import claimed, launch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cli"


@pytest.fixture
def logs(settings, tmp_path):
    settings.SPAWNER = {**settings.SPAWNER, "LOG_DIR": tmp_path / "logs"}
    return tmp_path / "logs"


def one_run(tmp_path, agent: str, key: str = "a"):
    batch = launch(json.dumps({"name": "u", "agent": agent, "tasks": [{"key": key, "prompt": "x"}]}), tmp_path)
    return batch, claimed(batch, key)


def finish(attempt, *, log: str = "", result: dict | None = None, usage_file: dict | None = None, status="succeeded"):
    log_path, result_path, _ = execution.attempt_paths(attempt)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(log)
    if result is not None:
        result_path.write_text(json.dumps(result))
    if usage_file is not None:
        usage.usage_path(log_path, attempt.run.key, attempt.number).write_text(json.dumps(usage_file))
    assert execution.attempt_finish(attempt, status=status, exit_code=0 if status == "succeeded" else 1)
    return AgentRun.objects.get(id=attempt.run_id)


@pytest.mark.parametrize("name", ["claude-code.text.log", "claude-code.fenced.log", "claude-code.result-file.log"])
def test_claude_code_tokens_and_its_own_total_cost(db, logs, tmp_path, name):
    AgentType.objects.create(name="claude-like", argv=["true"], output_format="claude-json")
    batch, attempt = one_run(tmp_path, "claude-like")
    run = finish(attempt, log=(FIXTURES / name).read_text())
    u = run.usage
    text = (FIXTURES / name).read_text()
    assert u["source"] == "cli" and u["models"] == ["claude-opus-5-5"]
    assert u["input_tokens"] > 0 and u["output_tokens"] > 0 and u["cache_read_tokens"] > 0
    assert u["cost_usd"] > 0 and f'"total_cost_usd":{u["cost_usd"]}' in text
    assert run.cost_usd == u["cost_usd"]
    attempt.refresh_from_db()
    assert attempt.usage == u


def test_codex_tokens_priced_from_the_table_when_its_command_names_the_model(db, logs, tmp_path):
    AgentType.objects.create(name="codex-like", argv=["true", "exec", "-m", "gpt-5"], output_format="codex-jsonl")
    ModelPrice.objects.update_or_create(
        model="gpt-5",
        defaults=dict(
            input_per_mtok=1.25,
            output_per_mtok=10,
            cache_read_per_mtok=0.125,
            cache_write_per_mtok=0,
            entered_on=datetime.date(2026, 11, 26),
        ),
    )
    batch, attempt = one_run(tmp_path, "codex-like")
    run = finish(attempt, log=(FIXTURES / "codex.fenced.log").read_text())
    u = run.usage
    # the recorded turn: input 42231 of which 21115 cached, output 91
    assert (u["input_tokens"], u["cache_read_tokens"], u["output_tokens"]) == (21116, 21115, 91)
    expected = (21116 * 1.25 + 21115 * 0.125 + 91 * 10) / 1e6
    assert run.cost_usd == pytest.approx(expected)
    attempt.refresh_from_db()
    assert u["models"] == ["gpt-5"] and "gpt-5" in attempt.usage["cost_from"]


def test_codex_without_a_model_shows_tokens_and_cost_unknown_with_the_reason(db, logs, tmp_path):
    AgentType.objects.create(name="codex-like", argv=["true", "exec", "-"], output_format="codex-jsonl")
    batch, attempt = one_run(tmp_path, "codex-like")
    run = finish(attempt, log=(FIXTURES / "codex.fenced.log").read_text())
    assert run.usage["input_tokens"] == 21116 and run.cost_usd is None
    assert run.usage["cost_note"] == "the agent did not say which model it used"


def test_result_file_tokens_and_cost(db, logs, tmp_path, agent_types):
    batch, attempt = one_run(tmp_path, "sh")
    run = finish(attempt, result={"summary": "ok", "tokens": 1500, "cost": 0.4})
    assert run.cost_usd == 0.4
    assert run.usage["source"] == "result-file" and run.usage["tokens_total"] == 1500


def test_the_model_runners_usage_file_comes_first(db, logs, tmp_path, agent_types):
    batch, attempt = one_run(tmp_path, "sh")
    api = {"input_tokens": 100, "output_tokens": 20, "models": ["llama-local"], "turns": 1, "cost_usd": None}
    run = finish(attempt, usage_file=api, result={"summary": "ok", "cost": 9.0})
    assert run.usage["source"] == "api" and run.usage["input_tokens"] == 100
    attempt.refresh_from_db()
    assert run.cost_usd == 9.0 and attempt.usage["cost_from"] == "from the result file's cost"
    batch2, attempt2 = one_run(tmp_path, "sh", key="b")
    run2 = finish(attempt2, usage_file=api)
    assert run2.cost_usd is None and run2.usage["cost_note"] == "no price for model 'llama-local' in the price table"


def test_no_usage_anywhere_leaves_it_empty_and_a_failed_attempt_still_counts(db, logs, tmp_path, agent_types):
    batch, attempt = one_run(tmp_path, "sh")
    run = finish(attempt, log="plain output\n")
    assert run.usage is None and run.cost_usd is None
    AgentType.objects.create(name="claude-like", argv=["true"], output_format="claude-json")
    batch, attempt = one_run(tmp_path, "claude-like", key="f")
    run = finish(attempt, log=(FIXTURES / "claude-code.text.log").read_text(), status=AttemptStatus.FAILED)
    assert run.cost_usd > 0


def test_usage_is_recorded_once_per_attempt_and_summed_over_attempts(db, logs, tmp_path, agent_types):
    batch = launch(
        json.dumps({"name": "u", "agent": "sh", "retries": 1, "backoff": 0, "tasks": [{"key": "a", "prompt": "x"}]}),
        tmp_path,
    )
    first = claimed(batch, "a")
    finish(first, result={"cost": 0.25, "tokens": 10}, status=AttemptStatus.FAILED)
    assert usage.record_attempt_end(first, log_path=execution.attempt_paths(first)[0], result={"cost": 5}) is None
    second = claimed_number(batch, "a", 2)
    run = finish(second, result={"summary": "ok", "cost": 0.5, "tokens": 20})
    assert run.cost_usd == pytest.approx(0.75) and run.usage["tokens_total"] == 30


def claimed_number(batch, key, number):
    from spawner.models import RunAttempt

    attempt = RunAttempt.objects.select_related("run__agent_type", "run__batch").get(
        run__batch=batch, run__key=key, number=number
    )
    assert execution.attempt_claim(attempt) == (True, 0.0)
    return attempt


def test_gemini_recorded_json_each_model_priced_at_its_own_rate(db, logs, tmp_path):
    # Gemini CLI 0.61.0: its model router (flash-lite) and the model it picked, tokens split per model.
    AgentType.objects.create(name="gemini-like", argv=["true"], output_format="gemini-json")
    text = (FIXTURES / "gemini.fenced.log").read_text()
    models = json.loads(text[text.index("\n{") :])["stats"]["models"]
    router, main = list(models)
    prices = {router: (0.1, 0.4, 0.01), main: (0.5, 3.0, 0.05)}
    expected = 0.0
    for model, (i, o, c) in prices.items():
        t = models[model]["tokens"]
        expected += (t["input"] * i + (t["candidates"] + t["thoughts"]) * o + t["cached"] * c) / 1_000_000
    day = datetime.date(2026, 11, 26)
    ModelPrice.objects.create(
        model=router, input_per_mtok=0.1, output_per_mtok=0.4, cache_read_per_mtok=0.01, entered_on=day
    )
    batch, attempt = one_run(tmp_path, "gemini-like")
    run = finish(attempt, log=text)
    u = run.usage
    assert u["source"] == "cli" and u["models"] == [router, main]
    attempt.refresh_from_db()
    assert attempt.usage["per_model"][main]["cache_read_tokens"] == models[main]["tokens"]["cached"] > 0
    assert run.cost_usd is None and u["cost_note"] == f"no price for model '{main}' in the price table"

    ModelPrice.objects.create(
        model=main, input_per_mtok=0.5, output_per_mtok=3.0, cache_read_per_mtok=0.05, entered_on=day
    )
    batch, attempt = one_run(tmp_path, "gemini-like", key="b")
    run = finish(attempt, log=text)
    assert run.cost_usd == pytest.approx(expected) and expected > 0
    entered = "(entered 2026-11-26)"
    attempt.refresh_from_db()
    assert attempt.usage["cost_from"] == f"from the price table: {router} {entered}, {main} {entered}"


def test_a_cancelled_attempts_usage_is_recorded_by_the_worker_that_stopped_it(db, logs, tmp_path, agent_types):
    from spawner.engine import transitions

    batch, attempt = one_run(tmp_path, "sh")
    log_path = execution.attempt_paths(attempt)[0]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    usage.usage_path(log_path, "a", 1).write_text(json.dumps({"input_tokens": 7, "cost_usd": 0.01}))
    assert usage.record_attempt_end(attempt, log_path=log_path, stopped=True) is None, "still running: not yet"
    transitions.run_cancel(AgentRun.objects.get(id=attempt.run_id), error="cancelled")
    assert usage.record_attempt_end(attempt, log_path=log_path, stopped=True)["cost_usd"] == 0.01
    assert AgentRun.objects.get(id=attempt.run_id).cost_usd == 0.01
