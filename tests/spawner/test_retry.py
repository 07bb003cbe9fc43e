"""A person retries a run: what reopens, what is refused, what keeps running."""

from __future__ import annotations

import pytest

from spawner import services
from spawner.engine import execution
from spawner.errors import ActionRefused
from spawner.models import AgentRun, RunAttempt
from tests.spawner.helpers import claimed, launch, queued_batch


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
