"""A run's duration is recorded however it ends: succeeded, failed, timed out, lost or cancelled."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from spawner.engine import transitions
from spawner.models import AgentRun, RunAttempt
from spawner.states import AttemptStatus, EventKind
from tests.spawner.helpers import launch

pytestmark = pytest.mark.django_db

SPEC = "name: d\nagent: sh\nretries: 0\ntasks:\n  - {key: a, prompt: 'true'}\n"


def started(tmp_path, ran_for: float) -> AgentRun:
    """A run whose attempt started `ran_for` seconds ago."""
    batch = launch(SPEC, tmp_path)
    run = AgentRun.objects.get(batch=batch, key="a")
    if run.status == "pending":
        with transaction.atomic():
            transitions.attempt_queue(run, not_before=timezone.now(), reason=EventKind.RUN_QUEUED)
    attempt = RunAttempt.objects.get(run=run, number=1)
    transitions.attempt_start(attempt, now=timezone.now() - timedelta(seconds=ran_for), host="test", pid=0, log_path="")
    return AgentRun.objects.get(id=run.id)


def test_a_cancelled_run_keeps_the_time_it_ran(agent_types, tmp_path):
    run = started(tmp_path, ran_for=25)
    with transaction.atomic():
        assert transitions.run_cancel(run, error="cancelled by a user")
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert run.duration_seconds == pytest.approx(25, abs=2)


@pytest.mark.parametrize("status", [AttemptStatus.TIMED_OUT, AttemptStatus.LOST, AttemptStatus.FAILED])
def test_a_run_that_timed_out_was_lost_or_failed_keeps_the_time_it_ran(agent_types, tmp_path, status):
    run = started(tmp_path, ran_for=12)
    attempt = RunAttempt.objects.select_related("run").get(run=run, number=1)
    assert transitions.attempt_end(attempt, transitions.AttemptEnd(status=status, exit_code=None), backoff_cap=0)
    run.refresh_from_db()
    assert run.status == status
    assert run.duration_seconds == pytest.approx(12, abs=2)


def test_a_run_cancelled_before_it_started_has_no_duration(agent_types, tmp_path):
    batch = launch(SPEC, tmp_path)
    run = AgentRun.objects.get(batch=batch, key="a")
    with transaction.atomic():
        assert transitions.run_cancel(run, error="cancelled by a user")
    run.refresh_from_db()
    assert run.status == "cancelled" and run.duration_seconds is None
