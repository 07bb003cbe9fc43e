"""Model agents against the scripted OpenAI-compatible server on 127.0.0.1, and rate limits.

The runner alone first (fast: a thread, a server, files), then whole batches through a real cluster.
"""

from __future__ import annotations

import json
import time

import pytest

from spawner.engine import execution
from spawner.models import AgentType, RunAttempt, RunEvent
from spawner.runners import Invocation, ModelCall, ModelRunner, runner_for
from spawner.runners.model import EXIT_RATE_LIMITED, usage_path
from spawner.states import AgentKind, AttemptStatus, BatchStatus, EventKind, RunStatus
from tests.spawner.helpers import launch, wait_batch, wait_for, wait_run
from tests.support.model_server import ModelServer

SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"type": "string"}, "findings": {"type": "array"}},
    "required": ["verdict"],
}


@pytest.fixture
def server():
    with ModelServer() as s:
        yield s


def invocation(tmp_path, server, prompt="hello", **call) -> Invocation:
    return Invocation(
        argv_template=(),
        prompt=prompt,
        prompt_via="arg",
        key="m",
        cwd=tmp_path,
        log_path=tmp_path / "m.1.log",
        result_path=tmp_path / "m.1.result.json",
        prompt_path=tmp_path / "m.1.prompt.txt",
        model=ModelCall(base_url=server.url + "/v1", model="scripted-7b", **call),
    )


# --- the runner alone ---------------------------------------------------------------------


def test_the_answer_streams_into_the_log_and_becomes_the_summary_with_its_usage(tmp_path, server):
    server.chat("The code looks fine to me.", usage=(40, 7), cached_tokens=10)
    server.token_delay = 0.05
    inv = invocation(tmp_path, server, system_prompt="You review code.", temperature=0.2, max_tokens=100)
    call = ModelRunner().start(inv)

    assert call.pgid is None, "no process group: the reaper and the hand-back skip it"
    wait_for(lambda: inv.log_path.exists() and b"The code" in inv.log_path.read_bytes(), 5, "the first tokens")
    assert call.poll() is None, "still streaming while the first tokens are in the log"
    assert call.wait(10) == 0, call.error
    assert inv.log_path.read_text().strip() == "The code looks fine to me."
    assert json.loads(inv.result_path.read_text()) == {"summary": "The code looks fine to me."}
    assert json.loads(usage_path(inv.log_path).read_text()) == {
        "input_tokens": 30,
        "output_tokens": 7,
        "cache_read_tokens": 10,
        "cache_write_tokens": 0,
        "cost_usd": None,
        "models": ["scripted-7b"],
        "turns": 1,
        "source": "api",
    }
    body = server.chat_requests()[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [
        {"role": "system", "content": "You review code."},
        {"role": "user", "content": "hello"},
    ]
    assert body["temperature"] == 0.2 and body["max_tokens"] == 100


def test_a_schema_asks_for_structured_output_and_the_parsed_object_is_the_result(tmp_path, server):
    server.chat(json.dumps({"verdict": "approve", "findings": ["a nit"]}))
    inv = invocation(tmp_path, server, response_schema=SCHEMA)
    assert ModelRunner().start(inv).wait(10) == 0
    assert json.loads(inv.result_path.read_text()) == {"verdict": "approve", "findings": ["a nit"]}
    fmt = server.chat_requests()[0].body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == SCHEMA


def test_an_answer_that_is_not_json_for_the_schema_fails_clearly(tmp_path, server):
    server.chat("I approve.")
    call = ModelRunner().start(invocation(tmp_path, server, response_schema=SCHEMA))
    assert call.wait(10) == 1
    assert "not JSON for the schema" in call.error


def test_an_http_error_fails_with_the_status_and_the_api_message(tmp_path, server):
    server.chat(status=500)
    inv = invocation(tmp_path, server, api_key="sk-secret")
    call = ModelRunner().start(inv)
    assert call.wait(10) == 1
    assert call.error == "the model API answered HTTP 500: scripted 500"
    assert "HTTP 500" in inv.log_path.read_text()
    assert server.chat_requests()[0].headers["authorization"] == "Bearer sk-secret"


def test_a_429_is_a_rate_limit_with_the_advised_delay(tmp_path, server):
    server.chat(status=429, retry_after="7")
    call = ModelRunner().start(invocation(tmp_path, server))
    assert call.wait(10) == EXIT_RATE_LIMITED
    assert call.rate_limited and call.retry_after == 7
    assert "HTTP 429" in call.error


def test_a_stream_cut_mid_answer_fails_clearly(tmp_path, server):
    server.chat("one two three four five six", cut_after=3)
    inv = invocation(tmp_path, server)
    call = ModelRunner().start(inv)
    assert call.wait(10) == 1
    assert call.error.startswith("the stream was cut after 13 characters of the answer"), call.error
    assert not inv.result_path.exists() and not usage_path(inv.log_path).exists()


def test_an_unreachable_server_fails_clearly(tmp_path, server):
    inv = invocation(tmp_path, server)
    server.stop()
    call = ModelRunner().start(inv)
    assert call.wait(15) == 1
    assert "cannot connect to the model API" in call.error


def test_stop_closes_the_stream(tmp_path, server):
    server.chat("word " * 200)
    server.token_delay = 0.05
    inv = invocation(tmp_path, server)
    call = ModelRunner().start(inv)
    wait_for(lambda: server.chat_streams_open == 1 and inv.log_path.stat().st_size > 0, 5, "streaming")
    started = time.monotonic()
    assert call.stop(2) is not None
    assert time.monotonic() - started < 1.5
    wait_for(lambda: server.chat_disconnects == 1, 5, "the server to see the connection closed")
    assert not inv.result_path.exists()


def test_runner_for_picks_the_model_runner_for_a_model_type():
    assert isinstance(runner_for(AgentType(name="m", kind=AgentKind.MODEL)), ModelRunner)
    assert not isinstance(runner_for(AgentType(name="c", argv=["true"])), ModelRunner)


def test_an_agent_type_of_kind_model_needs_a_base_url_and_a_model():
    from django.core.exceptions import ValidationError

    t = AgentType(name="m", kind=AgentKind.MODEL)
    with pytest.raises(ValidationError) as err:
        t.clean()
    assert set(err.value.message_dict) == {"base_url", "model"}
    assert not t.available and "base URL" in t.unavailable_reason
    t = AgentType(name="m", kind=AgentKind.MODEL, base_url="http://x/v1", model="m", api_key_secret="MY_KEY")
    t.clean()
    assert t.secret_names == ["MY_KEY"], "the key is a named secret: read at run time, never stored"
    with pytest.raises(ValidationError):
        AgentType(name="c", argv=["x"], rate_limit_pattern="(").clean()


# --- through a real cluster -----------------------------------------------------------------


def model_type(server, name="reviewer", **fields) -> AgentType:
    return AgentType.objects.create(
        name=name, kind=AgentKind.MODEL, base_url=server.url + "/v1", model="scripted-7b", **fields
    )


def spec(agent: str, prompts: dict[str, str], extra: str = "") -> str:
    tasks = "\n".join(f"  - {{key: {k}, prompt: {v!r}}}" for k, v in prompts.items())
    return f"name: models\nagent: {agent}\n{extra}\ntasks:\n{tasks}\n"


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_model_agents_stream_live_and_their_schema_results_are_the_runs_results(cluster, tmp_path, server):
    model_type(server, response_schema=SCHEMA)
    server.chat(json.dumps({"verdict": "approve"}), when="review a")
    server.chat(json.dumps({"verdict": "reject", "findings": ["bug"]}), when="review b")
    server.token_delay = 0.02
    batch = wait_batch(launch(spec("reviewer", {"a": "review a", "b": "review b"}), tmp_path))

    assert batch.status == BatchStatus.SUCCEEDED
    results = dict(batch.runs.values_list("key", "result"))
    assert results == {"a": {"verdict": "approve"}, "b": {"verdict": "reject", "findings": ["bug"]}}
    for run in batch.runs.all():
        attempt = run.attempts.get()
        assert attempt.pgid is None
        log = execution.attempt_paths(attempt)[0]
        assert json.loads(log.read_text()) == run.result, "the answer streamed into the log"
        assert run.output_tail.strip() == log.read_text().strip()
        assert json.loads(usage_path(log).read_text())["models"] == ["scripted-7b"]
        assert attempt.usage["models"] == ["scripted-7b"], "the usage file is what the attempt records"
        assert attempt.usage["output_tokens"] > 0


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_model_reviewers_vote_like_cli_agents_and_a_tie_escalates(cluster, tmp_path, server):
    """The README's three reviewers: structured answers are the runs' results, so `vote` counts them."""
    from spawner.models import Aggregation, Escalation

    model_type(server, response_schema=SCHEMA)
    server.chat(json.dumps({"verdict": "ok", "findings": [{"title": "naming", "severity": "low"}]}), when="r1")
    server.chat(json.dumps({"verdict": "ok"}), when="r2")
    server.chat(json.dumps({"verdict": "fail", "findings": [{"title": "bug", "severity": "high"}]}), when="r3")
    prompts = {k: f"review the diff ({k})" for k in ("r1", "r2", "r3")}
    batch = wait_batch(launch(spec("reviewer", prompts, "aggregation: vote"), tmp_path))
    assert batch.status == BatchStatus.SUCCEEDED
    combined = Aggregation.objects.get(batch=batch).data
    assert combined["verdict"] == "ok" and combined["votes"] == {"ok": 2, "fail": 1}
    assert combined["summary"] == "'ok' by 2 of 3 agents"
    assert [f["title"] for f in combined["findings"]] == ["naming"]  # the majority's findings only

    server.chat(json.dumps({"verdict": "fail"}), when="t2")
    server.chat(json.dumps({"verdict": "ok"}), when="t1")
    tie = wait_batch(launch(spec("reviewer", {"t1": "review t1", "t2": "review t2"}, "aggregation: vote"), tmp_path))
    assert Aggregation.objects.get(batch=tie).data["summary"] == "tie between fail, ok (1 vote each)"
    assert Escalation.objects.filter(batch=tie, kind="vote", state="open").exists()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_429_with_retry_after_2_waits_2_s_and_succeeds_without_spending_a_retry(cluster, tmp_path, server):
    model_type(server)
    server.chat("fine now")
    server.chat(status=429, retry_after="2", times=1)
    batch = launch(spec("reviewer", {"a": "hi"}, "retries: 0"), tmp_path)
    queued = wait_for(
        lambda: batch.runs.filter(status=RunStatus.QUEUED, rate_limited_until__isnull=False).first(), 20, "the wait"
    )
    assert queued.status_label == "waiting: rate limited"
    batch = wait_batch(batch)

    run = batch.runs.get()
    assert batch.status == BatchStatus.SUCCEEDED and run.result == {"summary": "fine now"}
    first, second = run.attempts.order_by("number")
    assert first.status == AttemptStatus.RATE_LIMITED and "HTTP 429" in first.error
    assert second.status == AttemptStatus.SUCCEEDED
    waited = (second.started_at - first.finished_at).total_seconds()
    assert 1.9 <= waited < 4, waited
    assert run.retries == 0, "the retry budget was 0 and is still enough: the wait spent none"
    kinds = list(RunEvent.objects.filter(run=run).values_list("kind", flat=True))
    assert EventKind.ATTEMPT_RATE_LIMITED in kinds and EventKind.RUN_RATE_LIMITED in kinds
    assert EventKind.RUN_RETRYING not in kinds and not batch.escalations.exists()
    assert run.rate_limited_until is None and run.status_label == "Succeeded"


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_cut_stream_fails_the_attempt_with_a_clear_error(cluster, tmp_path, server):
    model_type(server)
    server.chat("one two three four five", cut_after=2)
    batch = wait_batch(launch(spec("reviewer", {"a": "hi"}), tmp_path))
    run = batch.runs.get()
    assert run.status == RunStatus.FAILED
    assert run.error.startswith("the stream was cut after 7 characters of the answer"), run.error
    assert "the stream was cut" in run.output_tail


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_an_http_error_fails_the_run(cluster, tmp_path, server):
    model_type(server)
    server.chat(status=503)
    batch = wait_batch(launch(spec("reviewer", {"a": "hi"}), tmp_path))
    assert batch.runs.get().error == "the model API answered HTTP 503: scripted 503"


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_cancelling_a_model_run_closes_its_stream(cluster, tmp_path, server):
    from spawner import services

    model_type(server)
    server.chat("word " * 400)
    server.token_delay = 0.05
    batch = launch(spec("reviewer", {"a": "hi"}), tmp_path)
    wait_run(batch, "a", RunStatus.RUNNING)
    wait_for(lambda: server.chat_streams_open == 1, 10, "the stream")
    services.batch_cancel(batch=batch)
    wait_for(lambda: server.chat_disconnects == 1, 10, "the server to see the connection closed")
    assert wait_batch(batch).status == BatchStatus.CANCELLED


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_cli_rate_limit_message_requeues_the_run_without_spending_a_retry(cluster, tmp_path):
    AgentType.objects.create(
        name="flaky-cli", argv=["sh", "-c", "{prompt}"], rate_limit_pattern=r"rate.?limit", rate_limit_exit_codes=[75]
    )
    marker = tmp_path / "limited-once"
    script = f"if [ -e {marker} ]; then echo done; else touch {marker}; echo 'Rate limit hit, retry in 1s'; exit 1; fi"
    batch = wait_batch(launch(spec("flaky-cli", {"a": script}, "retries: 0"), tmp_path))

    run = batch.runs.get()
    assert batch.status == BatchStatus.SUCCEEDED, run.error
    first, second = run.attempts.order_by("number")
    assert first.status == AttemptStatus.RATE_LIMITED and first.error == "rate limited: exit code 1, retry after 1 s"
    assert (second.started_at - first.finished_at).total_seconds() >= 0.9
    assert not batch.escalations.exists()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_rate_limit_waits_are_bounded(cluster, tmp_path, settings):
    """An exit code that always means a rate limit: the waits run out and the run fails, saying so."""
    AgentType.objects.create(name="always-limited", argv=["sh", "-c", "{prompt}"], rate_limit_exit_codes=[75])
    batch = wait_batch(launch(spec("always-limited", {"a": "echo 'retry after 0.2s'; exit 75"}), tmp_path), 60)
    run = batch.runs.get()
    assert run.status == RunStatus.FAILED
    assert "rate-limit waits spent (20 waits" in run.error
    assert RunAttempt.objects.filter(run=run, status=AttemptStatus.RATE_LIMITED).count() == 21


def test_a_models_key_is_masked_and_its_missing_pgid_is_skipped_by_the_reaper(monkeypatch):
    from spawner.engine import reaper, redaction

    monkeypatch.setenv("SCRIPTED_MODEL_KEY", "sk-very-secret-value")
    t = AgentType(
        name="m", kind=AgentKind.MODEL, base_url="http://x/v1", model="m", api_key_secret="SCRIPTED_MODEL_KEY"
    )
    assert "sk-very-secret-value" in redaction.secret_values(t)
    reaper._kill_orphan(RunAttempt(host=execution.HOST, pgid=None))  # nothing to kill, nothing raised


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_model_run_past_its_timeout_is_stopped_and_its_stream_closed(cluster, tmp_path, server):
    model_type(server)
    server.chat("word " * 400)
    server.token_delay = 0.05
    batch = wait_batch(launch(spec("reviewer", {"a": "hi"}).replace("prompt:", "timeout: 1, prompt:"), tmp_path))
    run = batch.runs.get()
    assert run.status == RunStatus.TIMED_OUT and run.error == "timed out after 1 s; stream closed"
    wait_for(lambda: server.chat_disconnects == 1, 10, "the server to see the connection closed")
