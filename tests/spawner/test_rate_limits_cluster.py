"""Per-minute limits of an agent type held by a real cluster: requests per minute (the third start
waits a minute after the first) and tokens per minute (a run that used the minute's tokens holds
the next start back until they leave the window). The pure rules: tests/spawner/test_ratelimit.py."""

from __future__ import annotations

import json
import time

import pytest

from spawner import services
from spawner.models import AgentRun, AgentType, RunAttempt
from spawner.states import RunStatus
from tests.spawner.helpers import launch, wait_batch, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def spec(agent: str, tasks: list[dict], parallel: int) -> str:
    return json.dumps({"name": agent, "agent": agent, "max_parallel": parallel, "tasks": tasks})


def test_two_requests_per_minute_hold_the_third_start_a_minute(cluster, tmp_path):
    AgentType.objects.create(name="rpm2", argv=["sh", "-c", "{prompt}"], requests_per_minute=2)
    batch = launch(spec("rpm2", [{"key": f"t{i}", "prompt": "true"} for i in range(3)], parallel=3), tmp_path)
    done = AgentRun.objects.filter(batch=batch, status=RunStatus.SUCCEEDED)
    wait_for(lambda: done.count() == 2, 30, "two runs to succeed")
    time.sleep(2)  # several scheduler steps: the third must still wait
    attempts = list(RunAttempt.objects.filter(run__batch=batch).order_by("not_before"))
    started = [a for a in attempts if a.started_at is not None]
    waiting = [a for a in attempts if a.started_at is None]
    try:
        assert len(started) == 2 and done.count() == 2
        assert waiting, "the third run has an attempt waiting for its minute"
        # The minute counts from the scheduler's decision to start the first (its attempt's not_before),
        # not from the agent's start stamp, which comes later by the dispatch time.
        gaps = [(a.not_before - started[0].not_before).total_seconds() for a in waiting]
        assert all(g >= 59.9 for g in gaps), (gaps, [a.not_before for a in attempts])
    finally:
        services.batch_cancel(batch=batch)
        wait_batch(batch, 30)


def test_a_run_that_used_the_minutes_tokens_holds_the_next_start_back(cluster, tmp_path):
    AgentType.objects.create(name="tpm", argv=["sh", "-c", "{prompt}"], tokens_per_minute=1000)
    costly = 'echo \'{"summary": "done", "tokens": {"input": 1500, "output": 10}}\' > "$SPAWNER_RESULT_FILE"'
    batch = launch(spec("tpm", [{"key": "a", "prompt": costly}, {"key": "b", "prompt": "true"}], parallel=1), tmp_path)
    a = wait_for(lambda: AgentRun.objects.filter(batch=batch, key="a", status=RunStatus.SUCCEEDED).first(), 30, "a")
    time.sleep(3)
    b = AgentRun.objects.get(batch=batch, key="b")
    try:
        assert b.status != RunStatus.SUCCEEDED, "b started although a used the minute's 1,510 tokens"
        assert not RunAttempt.objects.filter(run=b).exclude(started_at=None).exists()
        # Held for the minute after a's answer, not merely not started yet (a slow dispatch).
        for attempt in RunAttempt.objects.filter(run=b):
            assert (attempt.not_before - a.finished_at).total_seconds() >= 55, (attempt.not_before, a.finished_at)
    finally:
        services.batch_cancel(batch=batch)
        wait_batch(batch, 30)
