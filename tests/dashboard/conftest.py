"""Fixtures for dashboard tests: users with and without permissions, batches, engine-like changes."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.db import transaction
from django.utils import timezone

from spawner import events, services
from spawner.models import AgentRun, Batch, RunAttempt

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
    """A team member: may launch batches (and so retry and re-run them)."""
    return grant(User.objects.create_user("mia", password="pw-mia-12345"), "add_batch")


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
        return services.batch_launch(batch_spec=batch_spec, base_dir=tmp_path, owner=owner, spec_text=text,
                                     spec_data={"name": batch_spec.name})  # fmt: skip

    return make


def move(run: AgentRun, status: str, *, output: str | None = None, error: str = "") -> AgentRun:
    """What the engine does when a run changes: the row and its event, in one transaction."""
    now = timezone.now()
    with transaction.atomic():
        fields: dict = {"status": status}
        if status == "running":
            fields["started_at"] = now
            RunAttempt.objects.filter(run=run, number=run.attempt).update(status="running", started_at=now)
        elif status in ("succeeded", "failed"):
            fields.update(finished_at=now, duration_seconds=1.5, error=error)
            RunAttempt.objects.filter(run=run, number=run.attempt).update(
                status=status, finished_at=now, exit_code=0 if status == "succeeded" else 1, error=error
            )
        if output is not None:
            fields["output_tail"] = output
        AgentRun.objects.filter(id=run.id).update(**fields)
        kind = "run.output" if output is not None and status == run.status else f"run.{status}"
        events.record(batch_id=run.batch_id, run_id=run.id, attempt=run.attempt, kind=kind, status=status)
    run.refresh_from_db()
    return run


def finish(batch: Batch, status: str = "succeeded", wall: float = 2.0) -> Batch:
    Batch.objects.filter(id=batch.id).update(
        status=status, finished_at=timezone.now(), wall_seconds=wall, sum_seconds=4.0, speedup=2.0, efficiency=1.0
    )
    events.record(batch_id=batch.id, kind=f"batch.{status}", status=status)
    batch.refresh_from_db()
    return batch
