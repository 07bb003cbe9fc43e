"""The engine against a real qcluster process and real agent processes."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from spawner import services
from spawner.engine import execution, reaper, tasks
from spawner.models import AgentRun, RunAttempt, RunEvent
from spawner.states import AttemptStatus, BatchStatus, RunStatus
from tests.spawner.helpers import claimed, launch, pid_alive, queued_batch, wait_batch, wait_for, wait_run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def fan_out(n: int, prompt: str, *, max_parallel: int | None = None, agent: str = "sh", extra: str = "") -> str:
    tasks_yaml = "\n".join(f"  - {{key: t{i}, prompt: {prompt!r}}}" for i in range(n))
    return f"name: fan-out\nagent: {agent}\nmax_parallel: {max_parallel or n}\n{extra}\ntasks:\n{tasks_yaml}\n"


def intervals(batch):
    return [
        (a.started_at, a.finished_at)
        for a in RunAttempt.objects.filter(run__batch=batch, status=AttemptStatus.SUCCEEDED)
    ]


def test_sleeping_agents_overlap_in_time(cluster, agent_types, tmp_path):
    batch = wait_batch(launch(fan_out(6, "sleep 1"), tmp_path))

    assert batch.status == BatchStatus.SUCCEEDED
    spans = intervals(batch)
    assert len(spans) == 6
    latest_start = max(s for s, _ in spans)
    earliest_end = min(e for _, e in spans)
    assert latest_start < earliest_end, "all six were running at one moment"
    assert batch.wall_seconds < 3.5
    assert batch.speedup > 2


def test_sequential_mode_runs_one_at_a_time_in_plan_order(cluster, agent_types, tmp_path):
    spec = fan_out(3, "sleep 0.3", extra="mode: sequential").replace("key: t2,", "key: t2, priority: P0,")
    batch = wait_batch(launch(spec, tmp_path))

    assert batch.status == BatchStatus.SUCCEEDED
    attempts = list(RunAttempt.objects.filter(run__batch=batch).select_related("run").order_by("started_at"))
    for before, after in zip(attempts, attempts[1:], strict=False):
        assert before.finished_at <= after.started_at
    assert [a.run.key for a in attempts] == ["t2", "t0", "t1"], "plan order: wave, then priority"


def test_max_parallel_bounds_the_running_agents(cluster, agent_types, tmp_path):
    batch = wait_batch(launch(fan_out(6, "sleep 0.4", max_parallel=2), tmp_path))

    spans = intervals(batch)
    for start, _ in spans:
        running = sum(1 for s, e in spans if s <= start < e)
        assert running <= 2


def test_dependency_waves_run_in_order_and_a_failure_skips_dependents(cluster, agent_types, tmp_path):
    spec = """
name: waves
agent: sh
tasks:
  - {key: a, prompt: "exit 0"}
  - {key: b, prompt: "exit 3"}
  - {key: c, prompt: "exit 0", depends_on: [a]}
  - {key: d, prompt: "exit 0", depends_on: [b]}
  - {key: e, prompt: "exit 0", depends_on: [d]}
"""
    batch = wait_batch(launch(spec, tmp_path))

    status = dict(batch.runs.values_list("key", "status"))
    assert status == {
        "a": "succeeded",
        "b": "failed",
        "c": "succeeded",
        "d": "skipped",
        "e": "skipped",
    }
    assert batch.status == BatchStatus.PARTIAL
    a, c = AgentRun.objects.get(batch=batch, key="a"), AgentRun.objects.get(batch=batch, key="c")
    assert a.finished_at <= c.started_at
    assert AgentRun.objects.get(batch=batch, key="b").exit_code == 3


def test_a_timeout_kills_the_whole_process_tree(cluster, agent_types, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    script = f"sh -c 'echo $$ > {pidfile}; sleep 60' & sleep 60"
    spec = f"name: slow\nagent: sh\ntasks:\n  - {{key: slow, timeout: 1, prompt: {script!r}}}\n"
    batch = wait_batch(launch(spec, tmp_path), timeout=30)

    run = batch.runs.get()
    assert run.status == RunStatus.TIMED_OUT
    assert "timed out after 1 s" in run.error
    grandchild = int(pidfile.read_text())
    wait_for(lambda: not pid_alive(grandchild), 10, "the grandchild to die")


def test_it_retries_a_failed_run_until_it_succeeds(cluster, agent_types, tmp_path):
    marker = tmp_path / "count"
    script = f"echo x >> {marker}; test $(wc -l < {marker}) -ge 3"
    spec = f"name: flaky\nagent: sh\nretries: 3\nbackoff: 0.1\ntasks:\n  - {{key: flaky, prompt: {script!r}}}\n"
    batch = wait_batch(launch(spec, tmp_path))

    run = batch.runs.get()
    assert run.status == RunStatus.SUCCEEDED
    assert run.attempt == 3
    statuses = list(run.attempts.order_by("number").values_list("status", flat=True))
    assert statuses == ["failed", "failed", "succeeded"]
    kinds = list(RunEvent.objects.filter(run=run).values_list("kind", flat=True))
    assert kinds.count("run.retrying") == 2


def test_a_run_out_of_retries_fails(cluster, agent_types, tmp_path):
    spec = "name: doomed\nagent: sh\nretries: 1\nbackoff: 0.1\ntasks:\n  - {key: x, prompt: 'exit 1'}\n"
    batch = wait_batch(launch(spec, tmp_path))

    run = batch.runs.get()
    assert (run.status, run.attempt, batch.status) == ("failed", 2, BatchStatus.FAILED)


def test_a_killed_worker_is_marked_lost_and_the_run_retried(cluster, agent_types, tmp_path):
    marker = tmp_path / "first"
    # First attempt hangs; the retry finds the marker and succeeds at once.
    script = f"if [ -f {marker} ]; then echo second; else touch {marker}; sleep 60; fi"
    spec = f"name: crash\nagent: sh\nretries: 1\nbackoff: 0.1\ntasks:\n  - {{key: victim, prompt: {script!r}}}\n"
    batch = launch(spec, tmp_path)
    wait_run(batch, "victim", RunStatus.RUNNING)
    first = wait_for(lambda: RunAttempt.objects.filter(run__batch=batch, number=1, pgid__isnull=False).first())

    os.kill(first.worker_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    batch = wait_batch(batch, timeout=30)

    first.refresh_from_db()
    assert first.status == AttemptStatus.LOST
    assert "stopped sending heartbeats" in first.error
    assert time.monotonic() - killed_at < 3 + 5, "lost within the lease (3 s in tests) plus a reaper tick"
    run = batch.runs.get()
    assert (run.status, run.attempt) == (RunStatus.SUCCEEDED, 2)
    wait_for(lambda: not pid_alive(first.pgid), 10, "the orphaned agent process to be killed")


def test_a_redelivered_task_is_a_no_op(cluster, agent_types, tmp_path):
    batch = wait_batch(launch(fan_out(1, "echo once"), tmp_path))
    attempt = RunAttempt.objects.get(run__batch=batch)
    events_before = RunEvent.objects.count()

    assert tasks.execute_attempt(attempt.id).startswith("stale")

    attempt.refresh_from_db()
    assert attempt.status == AttemptStatus.SUCCEEDED
    assert RunEvent.objects.count() == events_before


def test_a_late_answer_from_a_reaped_attempt_changes_nothing(cluster, agent_types, tmp_path):
    from spawner.engine import execution

    batch = wait_batch(launch(fan_out(1, "echo hi"), tmp_path))
    attempt = RunAttempt.objects.select_related("run__agent_type", "run__batch").get(run__batch=batch)

    assert execution.attempt_finish(attempt, status=AttemptStatus.FAILED, error="late") is False
    assert batch.runs.get().status == RunStatus.SUCCEEDED


def test_cancelling_a_batch_stops_its_processes(cluster, agent_types, tmp_path):
    pids = tmp_path / "pids"
    batch = launch(fan_out(3, f"echo $$ >> {pids}; sleep 60"), tmp_path)
    wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 3, 20, "three agents to start")

    services.batch_cancel(batch=batch)
    batch = wait_batch(batch, timeout=20)

    assert batch.status == BatchStatus.CANCELLED
    assert set(batch.runs.values_list("status", flat=True)) == {RunStatus.CANCELLED}
    for pid in map(int, pids.read_text().split()):
        wait_for(lambda pid=pid: not pid_alive(pid), 10, f"agent {pid} to stop")


def test_cancelling_one_run_skips_nothing_else(cluster, agent_types, tmp_path):
    spec = "name: c\nagent: sh\ntasks:\n  - {key: long, prompt: 'sleep 60'}\n  - {key: quick, prompt: 'sleep 0.5'}\n"
    batch = launch(spec, tmp_path)
    run = wait_run(batch, "long", RunStatus.RUNNING)

    services.run_cancel(run=run)
    batch = wait_batch(batch)

    assert dict(batch.runs.values_list("key", "status")) == {"long": "cancelled", "quick": "succeeded"}
    assert batch.status == BatchStatus.PARTIAL


def test_fail_fast_cancels_the_rest(cluster, agent_types, tmp_path):
    spec = """
name: ff
agent: sh
failure_policy: fail_fast
tasks:
  - {key: bad, prompt: "sleep 0.3; exit 1", priority: P0}
  - {key: slow, prompt: "sleep 60"}
  - {key: later, prompt: "exit 0", depends_on: [slow]}
"""
    batch = wait_batch(launch(spec, tmp_path), timeout=20)

    assert batch.status == BatchStatus.FAILED
    assert dict(batch.runs.values_list("key", "status")) == {
        "bad": "failed",
        "slow": "cancelled",
        "later": "cancelled",
    }


def test_huge_and_binary_output_break_nothing(cluster, agent_types, tmp_path):
    spec = r"""
name: noisy
agent: sh
tasks:
  - {key: huge, prompt: "head -c 30000000 /dev/zero | tr '\\0' 'x'; echo; echo END"}
  - {key: binary, prompt: "head -c 200000 /dev/urandom; printf '\\377\\376 not utf-8 \\000 done'"}
"""
    batch = wait_batch(launch(spec, tmp_path), timeout=60)

    assert batch.status == BatchStatus.SUCCEEDED
    huge = batch.runs.get(key="huge")
    assert huge.output_tail.rstrip().endswith("END")
    assert len(huge.output_tail) <= 20_000
    log = huge.attempts.get().log_path
    assert os.path.getsize(log) > 30_000_000
    binary = batch.runs.get(key="binary")
    assert binary.output_tail.endswith("done")
    assert "\x00" not in binary.output_tail


def test_the_result_file_becomes_the_structured_result(cluster, agent_types, tmp_path):
    spec = r"""
name: results
agent: sh
tasks:
  - {key: good, prompt: "echo '{\"summary\": \"all fine\", \"verdict\": \"pass\"}' > \"$SPAWNER_RESULT_FILE\""}
  - {key: broken, prompt: "echo '{not json' > \"$SPAWNER_RESULT_FILE\""}
"""
    batch = wait_batch(launch(spec, tmp_path))

    good, broken = batch.runs.get(key="good"), batch.runs.get(key="broken")
    assert good.result == {"summary": "all fine", "verdict": "pass"}
    assert broken.status == RunStatus.SUCCEEDED
    assert broken.result is None
    assert "not valid JSON" in broken.result_error


def test_every_state_change_is_in_the_event_log(cluster, agent_types, tmp_path):
    batch = wait_batch(launch(fan_out(1, "echo hi"), tmp_path))

    kinds = list(RunEvent.objects.filter(batch=batch).values_list("kind", flat=True))
    assert kinds[0] == "batch.launched"
    assert kinds[-2:] == ["batch.succeeded", "aggregation.computed"]
    for kind in ("run.queued", "run.running", "attempt.succeeded", "run.succeeded"):
        assert kind in kinds


@pytest.mark.parametrize(
    ("content", "why"),
    [('{"score": NaN}', "NaN"), ('{"big": 1e400}', "too large"), ("[" * 100_000 + "]" * 100_000, "deeply")],
)
def test_a_result_the_database_cannot_hold_is_a_result_error(tmp_path, content, why):
    path = tmp_path / "r.json"
    path.write_text(content)
    result, error = execution.read_result(path)
    assert result is None and why in error


def test_a_second_claim_of_one_attempt_is_refused(agent_types, tmp_path):
    attempt = claimed(queued_batch(tmp_path), "a")
    assert execution.attempt_claim(attempt) == (False, 0.0)


def test_a_reaped_attempt_that_answers_late_leaves_its_retry_queued(agent_types, tmp_path):
    batch = queued_batch(tmp_path, retries=1)
    first = claimed(batch, "a")
    assert execution.attempt_finish(first, status="lost", error="reaped")  # the reaper's verdict

    assert execution.attempt_finish(first, status="succeeded", exit_code=0) is False

    run = AgentRun.objects.get(batch=batch, key="a")
    assert (run.status, run.attempt) == ("queued", 2)


def test_an_attempt_abandoned_while_waiting_is_sent_again(agent_types, tmp_path, monkeypatch):
    from spawner.engine import queue

    batch = queued_batch(tmp_path)
    long_ago = timezone.now() - timedelta(minutes=5)
    RunAttempt.objects.filter(run__batch=batch, run__key="a").update(heartbeat_at=long_ago, not_before=long_ago)
    sent = []  # whichever broker is configured: what the reaper hands it
    monkeypatch.setattr(queue, "enqueue_attempt", lambda attempt, batch_id: sent.append(attempt.id))

    assert reaper.resend_abandoned() == 1
    assert sent == [RunAttempt.objects.get(run__batch=batch, run__key="a").id]
    assert reaper.resend_abandoned() == 0, "sent once, not on every tick"


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


def test_an_attempt_of_a_machine_whose_cluster_lives_is_left_to_that_machine(agent_types, tmp_path, monkeypatch):
    from django.conf import settings

    from spawner.engine import reaper
    from spawner.models import WorkerHeartbeat

    monkeypatch.setitem(settings.SPAWNER, "LOG_DIR", str(tmp_path / "logs"))

    attempt = claimed(queued_batch(tmp_path), "a")
    old = timezone.now() - timedelta(hours=1)
    RunAttempt.objects.filter(id=attempt.id).update(host="other-machine", heartbeat_at=old, pgid=None)
    WorkerHeartbeat.objects.create(host="other-machine", pid=1, workers=1, seen_at=timezone.now())
    assert reaper.reap_lost() == 0
    assert RunAttempt.objects.get(id=attempt.id).status == "running"
    WorkerHeartbeat.objects.filter(host="other-machine").update(seen_at=old)
    assert reaper.reap_lost() == 1
    assert RunAttempt.objects.get(id=attempt.id).status == "lost"
