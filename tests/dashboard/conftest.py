"""Fixtures for dashboard tests: users with and without permissions, batches, engine-like changes."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.db import transaction
from django.utils import timezone

from spawner import services
from spawner.engine import events, transitions
from spawner.models import AgentRun, Batch, RunAttempt
from spawner.states import EventKind

SPEC = """\
name: demo
max_parallel: 2
agent: sh
tasks:
  - {key: build, prompt: "echo build"}
  - {key: test, prompt: "echo test", depends_on: [build]}
  - {key: lint, prompt: "echo lint"}
"""


def grant(user: User, *codenames: str) -> User:
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="spawner", codename__in=codenames))
    return User.objects.get(id=user.id)  # permissions are cached on the instance


@pytest.fixture
def member(db):
    """A team member: may launch batches (and so retry and re-run them), review results and
    resolve escalations."""
    return grant(
        User.objects.create_user("mia", password="pw-mia-12345"), "add_batch", "review_batch", "resolve_escalation"
    )


@pytest.fixture
def launcher(db):
    """May launch batches (and retry, re-run), nothing else."""
    return grant(User.objects.create_user("lou", password="pw-lou-12345"), "add_batch")


@pytest.fixture
def reviewer(db):
    """May review results and assign and resolve escalations, not launch."""
    return grant(User.objects.create_user("rey", password="pw-rey-12345"), "review_batch", "resolve_escalation")


@pytest.fixture
def admin(db):
    return User.objects.create_superuser("ada", password="pw-ada-12345")


@pytest.fixture
def viewer(db):
    """Signed in, with no permission at all: may look, not act."""
    return User.objects.create_user("vic", password="pw-vic-12345")


@pytest.fixture
def signed_in(client, member):
    client.force_login(member)
    return client


@pytest.fixture
def make_batch(agent_types, tmp_path):
    def make(owner=None, text: str = SPEC) -> Batch:
        batch_spec = services.spec_load(text, is_admin=True)
        return services.batch_launch(
            batch_spec=batch_spec, base_dir=tmp_path, owner=owner, spec_text=text, spec_data={"name": batch_spec.name}
        )

    return make


def move(run: AgentRun, status: str, *, output: str | None = None, error: str = "", result=None) -> AgentRun:
    """Move a run as the engine does, through its transitions (row and event in one transaction)."""
    now = timezone.now()
    with transaction.atomic():
        if run.status == "pending":
            transitions.attempt_queue(run, not_before=now, reason=EventKind.RUN_QUEUED)
        attempt = RunAttempt.objects.select_related("run__batch").get(run=run, number=run.attempt)
        if status == "running" and run.status != "running":
            transitions.attempt_start(attempt, now=now, host="test", pid=0, log_path="")
        if output is not None:
            AgentRun.objects.filter(id=run.id).update(output_tail=output)
            if status == "running":
                events.record(batch_id=run.batch_id, run_id=run.id, attempt=run.attempt, kind=EventKind.RUN_OUTPUT)
        if status in ("succeeded", "failed"):
            if run.status != "running":
                transitions.attempt_start(attempt, now=now, host="test", pid=0, log_path="")
            end = transitions.AttemptEnd(
                status=status,
                exit_code=0 if status == "succeeded" else 1,
                error=error,
                tail=output if output is not None else AgentRun.objects.get(id=run.id).output_tail,
                result=result,
            )
            transitions.attempt_end(attempt, end, backoff_cap=0)
            AgentRun.objects.filter(id=run.id).update(duration_seconds=1.5)
    run.refresh_from_db()
    return run


def finish(batch: Batch, status: str = "succeeded", wall: float = 2.0) -> Batch:
    """End a batch as the engine does, with chosen figures."""
    figures = {"wall_seconds": wall, "sum_seconds": 4.0, "speedup": 2.0, "efficiency": 1.0}
    with transaction.atomic():
        transitions.batch_end(batch, status, figures=figures, now=timezone.now())
    batch.refresh_from_db()
    return batch


FANIN_SPEC = """\
name: review
agent: sh
aggregation: merge
tasks:
  - {key: security, prompt: "echo security"}
  - {key: style, prompt: "echo style", priority: P2}
  - {key: critical, prompt: "test -f marker", priority: P0}
"""

SECURITY = {
    "summary": "one injection, one broad except",
    "verdict": "fail",
    "findings": [
        {
            "severity": "high",
            "title": "Shell injection",
            "file": "spawner/runners/shell.py",
            "line": 12,
            "detail": "sh -c with <user> input",
        },
        {"severity": "low", "title": "broad except", "file": "spawner/execution.py", "line": 40},
    ],
    "suggestions": ["quote the arguments"],
    "tokens": 1200,
    "cost": 0.02,
}
STYLE = {
    "summary": "naming and length",
    "verdict": "warn",
    "findings": [
        {"severity": "medium", "title": "shell injection", "file": "./spawner/runners/shell.py", "line": 12},
        {"severity": "info", "title": "long function", "file": "dashboard/live.py", "line": 100},
    ],
}


def end_with_results(batch: Batch, results: dict[str, dict | None], failed: tuple[str, ...] = ()) -> Batch:
    """Each run ends (succeeded with its result, or failed), then the engine's fan-in: the aggregation
    and an escalation for each failed P0 run."""
    from spawner.engine import fanin

    for run in batch.runs.order_by("order"):
        run = move(run, "running", output=f"{run.key} says hello\n")
        status = "failed" if run.key in failed else "succeeded"
        run = move(run, status, error="exit code 1" if run.key in failed else "", result=results.get(run.key))
    batch = finish(batch, "partial" if failed else "succeeded")
    fanin.aggregation_compute(batch)
    return batch


@pytest.fixture
def teammate(db):
    return User.objects.create_user("bob", password="pw-bob-12345")


@pytest.fixture
def reviewed(make_batch, member):
    """A merge batch: two reviewers with findings (one folded duplicate), a failed P0 run escalated."""
    return end_with_results(
        make_batch(member, text=FANIN_SPEC), {"security": SECURITY, "style": STYLE}, failed=("critical",)
    )
