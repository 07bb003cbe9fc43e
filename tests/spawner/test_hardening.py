"""What a fresh-eyes review found: each case the engine now survives, tested."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

import pytest
from django.utils import timezone

from spawner import presets, services, spec
from spawner.api import ParallelSpawner
from spawner.engine import execution, reaper
from spawner.errors import ActionRefused
from spawner.models import AgentRun, Batch, RunAttempt
from spawner.runners import CommandRunner, Invocation
from spawner.runners.command import build_argv
from tests.spawner.helpers import launch, pid_alive, wait_batch, wait_for


@pytest.mark.parametrize(
    ("content", "why"),
    [('{"score": NaN}', "NaN"), ('{"big": 1e400}', "too large"), ("[" * 100_000 + "]" * 100_000, "deeply")],
)
def test_a_result_the_database_cannot_hold_is_a_result_error(tmp_path, content, why):
    path = tmp_path / "r.json"
    path.write_text(content)
    result, error = execution.read_result(path)
    assert result is None and why in error


def invocation(tmp_path, argv, prompt) -> Invocation:
    return Invocation(
        argv_template=tuple(argv),
        prompt=prompt,
        prompt_via="arg",
        key="k",
        cwd=tmp_path,
        log_path=tmp_path / "log",
        result_path=tmp_path / "r",
        prompt_path=tmp_path / "p",
        env={"PATH": os.environ["PATH"]},
    )


def test_placeholders_inside_the_prompt_stay_as_written(tmp_path):
    argv = build_argv(invocation(tmp_path, ["agent", "{key}", "{prompt}"], "literal {key} and {cwd}"))
    assert argv == ["agent", "k", "literal {key} and {cwd}"]


def test_a_tool_prompt_can_never_become_an_option(tmp_path):
    pytest_type = next(t for t in presets.AGENT_TYPES if t["name"] == "pytest")
    argv = build_argv(invocation(tmp_path, pytest_type["argv"], "--junit-xml=/tmp/victim"))
    assert argv[-2:] == ["--", "--junit-xml=/tmp/victim"]


def test_stopping_a_process_leaks_no_file_descriptor(tmp_path):
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        CommandRunner().start(invocation(tmp_path, ["sleep", "{prompt}"], "5")).stop(grace=0.5)
    assert len(os.listdir("/proc/self/fd")) <= before


def test_a_nul_byte_in_a_prompt_fails_the_start_clearly(tmp_path):
    from spawner.runners import RunnerError

    with pytest.raises(RunnerError, match="cannot pass the prompt"):
        CommandRunner().start(invocation(tmp_path, ["echo", "{prompt}"], "a\x00b"))


AGENTS = {"sh": spec.AgentInfo("sh")}


def test_dates_in_a_spec_stay_text():
    batch = spec.load(
        "name: d\nagent: sh\nvars: {when: 2024-01-01}\ntasks:\n  - {key: a, prompt: 'on {{ when }}'}\n",
        agents=AGENTS,
        roles={},
    )
    assert batch.tasks[0].prompt == "on 2024-01-01"


@pytest.mark.parametrize("text", ["name: x\ntasks: !!binary aGVsbG8=\n", 'name: "a\\0b"\ntasks: []\n', "name: a\x00\n"])
def test_values_json_cannot_hold_are_refused(text):
    with pytest.raises(spec.SpecInvalid, match="NUL|plain text"):
        spec.load(text, agents=AGENTS, roles={})


def test_only_an_admin_may_set_a_webhook():
    text = "name: w\nagent: sh\nwebhook: https://hooks.example.org/\ntasks:\n  - {key: a}\n"
    with pytest.raises(spec.SpecInvalid, match="webhook: may only be set by an admin"):
        spec.load(text, agents=AGENTS, roles={})
    assert spec.load(text, agents=AGENTS, roles={}, is_admin=True).webhook == "https://hooks.example.org/"


@pytest.mark.parametrize(
    "url, why",
    [
        ("http://10.0.0.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://localhost:8000/", "localhost"),
    ],
)
def test_even_an_admin_may_not_point_a_webhook_at_a_private_address(url, why):
    text = f"name: w\nagent: sh\nwebhook: '{url}'\ntasks:\n  - {{key: a}}\n"
    with pytest.raises(spec.SpecInvalid, match=f"webhook: may not target .*{why}"):
        spec.load(text, agents=AGENTS, roles={}, is_admin=True)
    hosts = {"10.0.0.1", "169.254.169.254", "::ffff:127.0.0.1", "localhost"}
    allowed = spec.Limits(webhook_allow_hosts=frozenset(hosts))
    assert spec.load(text, agents=AGENTS, roles={}, is_admin=True, limits=allowed).webhook == url


def test_the_api_gives_the_same_prompt_twice_distinct_keys():
    from spawner.api import _task_dict, _unique_keys

    tasks = _unique_keys([_task_dict(i, t) for i, t in enumerate(["go", "go", "go"])])
    assert [t["key"] for t in tasks] == ["go", "go-2", "go-3"]


SPEC = "name: f\nagent: sh\nretries: {retries}\n{extra}\ntasks:\n  - {{key: a, prompt: x}}\n  - {{key: b, prompt: y}}\n"


def queued_batch(tmp_path, retries=0, extra=""):
    """A launched batch with no cluster: its first attempts sit queued."""
    return launch(SPEC.format(retries=retries, extra=extra), tmp_path)


def claimed(batch, key):
    attempt = RunAttempt.objects.select_related("run__agent_type", "run__batch").get(run__batch=batch, run__key=key)
    assert execution.attempt_claim(attempt) == (True, 0.0)
    return attempt


def test_a_second_claim_of_one_attempt_is_refused(agent_types, tmp_path):
    attempt = claimed(queued_batch(tmp_path), "a")
    assert execution.attempt_claim(attempt) == (False, 0.0)


def test_a_late_answer_from_a_reaped_attempt_changes_nothing(agent_types, tmp_path):
    batch = queued_batch(tmp_path, retries=1)
    first = claimed(batch, "a")
    assert execution.attempt_finish(first, status="lost", error="reaped")  # the reaper's verdict

    assert execution.attempt_finish(first, status="succeeded", exit_code=0) is False

    run = AgentRun.objects.get(batch=batch, key="a")
    assert (run.status, run.attempt) == ("queued", 2)


def test_an_attempt_abandoned_while_waiting_is_sent_again(agent_types, tmp_path):
    from django_q.models import OrmQ

    batch = queued_batch(tmp_path)
    long_ago = timezone.now() - timedelta(minutes=5)
    RunAttempt.objects.filter(run__batch=batch, run__key="a").update(heartbeat_at=long_ago, not_before=long_ago)
    messages = OrmQ.objects.count()

    assert reaper.resend_abandoned() == 1
    assert OrmQ.objects.count() == messages + 1
    assert reaper.resend_abandoned() == 0, "sent once, not on every tick"


def test_a_manual_retry_in_a_fail_fast_batch_is_not_cancelled_at_once(agent_types, tmp_path):
    batch = queued_batch(tmp_path, extra="failure_policy: fail_fast")
    b = claimed(batch, "b")
    execution.attempt_finish(claimed(batch, "a"), status="failed", exit_code=1)
    # Both failed (b at the same moment, before fail_fast could stop it).
    RunAttempt.objects.filter(id=b.id).update(status="failed")
    AgentRun.objects.filter(batch=batch, key="b").update(status="failed")
    batch.refresh_from_db()
    assert batch.status == "failed"

    services.run_retry(run=AgentRun.objects.get(batch=batch, key="a"), actor=None)

    batch.refresh_from_db()
    assert (batch.status, batch.failure_policy) == ("running", "continue")
    assert AgentRun.objects.get(batch=batch, key="a").status == "queued"


def test_a_race_with_a_winner_refuses_a_retry(agent_types, tmp_path):
    batch = queued_batch(tmp_path, extra="aggregation: first_success")
    execution.attempt_finish(claimed(batch, "a"), status="succeeded", exit_code=0)
    assert AgentRun.objects.get(batch=batch, key="b").status == "cancelled"

    with pytest.raises(ActionRefused, match="already has a winner"):
        services.run_retry(run=AgentRun.objects.get(batch=batch, key="b"), actor=None)


def test_a_retry_reopens_only_its_own_skipped_dependents_and_logs_it(agent_types, tmp_path):
    text = """
name: deps
agent: sh
tasks:
  - {key: a, prompt: x}
  - {key: b, prompt: x}
  - {key: after-a, prompt: x, depends_on: [a]}
  - {key: after-b, prompt: x, depends_on: [b]}
"""
    batch = launch(text, tmp_path)
    for key in ("a", "b"):
        execution.attempt_finish(claimed(batch, key), status="failed", exit_code=1)

    services.run_retry(run=AgentRun.objects.get(batch=batch, key="a"), actor=None)

    status = dict(batch.runs.values_list("key", "status"))
    assert status["after-a"] == "pending" and status["after-b"] == "skipped"
    assert batch.events.filter(kind="run.pending", run__key="after-a").exists()


@pytest.mark.integration
def test_what_an_agent_leaves_in_the_background_is_stopped(cluster, agent_types, tmp_path):
    pidfile = tmp_path / "bg"
    text = f"name: bg\nagent: sh\ntasks:\n  - {{key: a, prompt: 'sleep 300 & echo $! > {pidfile}'}}\n"
    batch = wait_batch(launch(text, tmp_path))
    assert batch.status == "succeeded"
    wait_for(lambda: not pid_alive(int(pidfile.read_text())), 10, "the background sleep to be stopped")


@pytest.mark.integration
def test_a_poisoned_result_fails_nothing_and_the_batch_ends(cluster, agent_types, tmp_path):
    text = """
name: p
agent: sh
tasks:
  - key: a
    prompt: |
      printf '{"x": NaN}' > "$SPAWNER_RESULT_FILE"
"""
    batch = wait_batch(launch(text, tmp_path))
    run = batch.runs.get()
    assert (batch.status, run.status, run.result) == ("succeeded", "succeeded", None)
    assert "NaN" in run.result_error


@pytest.mark.integration
def test_the_python_api_can_race_one_prompt(cluster, agent_types, tmp_path):
    async def main():
        spawner = ParallelSpawner(tmp_path, max_parallel=3, aggregation="first_success")
        await spawner.spawn_parallel(tasks=["sleep 0.2", "sleep 0.2", "sleep 0.2"], agent_type="sh")
        return await spawner.wait_all(timeout=30)

    summary = asyncio.run(main())
    assert summary["batches"][0]["status"] == "succeeded"
    assert Batch.objects.get().aggregation_result.data["winner"].startswith("sleep-0.2")
