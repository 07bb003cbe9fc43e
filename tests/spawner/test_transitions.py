"""The transitions module owns every status change: its table, its fencing, its events."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from django.db import DatabaseError
from django.utils import timezone

from spawner import services
from spawner.engine import events, transitions
from spawner.errors import ActionRefused
from spawner.models import AgentRun, AgentType, Batch, Escalation, MergeStep, RunAttempt, RunEvent
from spawner.states import AttemptStatus, BatchStatus, EventKind, RunStatus

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


@pytest.fixture
def batch(db):
    return Batch.objects.create(name="t", spec={}, max_parallel=2)


@pytest.fixture
def run(batch):
    agent = AgentType.objects.create(name="t-echo", argv=["echo", "{prompt}"])
    return AgentRun.objects.create(batch=batch, key="a", agent_type=agent, timeout=60, order=0, attempt=1)


def row_in(transition: transitions.Transition, state: str, batch: Batch, run: AgentRun) -> int:
    """A fresh row of the transition's model, in `state`; returns its id."""
    model = transition.model
    if model is Batch:
        return Batch.objects.create(name="x", spec={}, status=state).id
    if model is AgentRun:
        AgentRun.objects.filter(id=run.id).update(status=state)
        return run.id
    if model is RunAttempt:
        RunAttempt.objects.filter(run=run).delete()
        return RunAttempt.objects.create(run=run, number=1, not_before=timezone.now(), status=state).id
    if model is MergeStep:
        MergeStep.objects.filter(run=run).delete()
        return MergeStep.objects.create(batch=batch, run=run, position=0, state=state).id
    return Escalation.objects.create(batch=batch, kind=Escalation.Kind.VOTE, reason="r", state=state).id


CASES = [
    (name, state, target)
    for name, t in transitions.TABLE.items()
    for state in t.model._meta.get_field(t.field).choices
    for target in sorted(t.targets)
    for state in [state[0]]
]


@pytest.mark.parametrize(("name", "state", "target"), CASES)
def test_each_transition_moves_from_exactly_the_states_it_names(name, state, target, batch, run):
    t = transitions.TABLE[name]
    pk = row_in(t, state, batch, run)
    moved = transitions.move(name, pk, target)
    assert moved is (state in t.sources)
    now = t.model.objects.values_list(t.field, flat=True).get(pk=pk)
    assert now == (target if moved else state)


def test_a_transition_refuses_a_target_it_does_not_name(run):
    with pytest.raises(ValueError, match="run_skipped cannot lead to"):
        transitions.move("run_skipped", run.id, RunStatus.SUCCEEDED)


def test_a_run_transition_fenced_on_an_older_attempt_changes_nothing(run):
    AgentRun.objects.filter(id=run.id).update(status=RunStatus.RUNNING, attempt=2)
    assert not transitions.move("run_ended", run.id, RunStatus.FAILED, fence={"attempt": 1})
    assert AgentRun.objects.get(id=run.id).status == RunStatus.RUNNING


def test_a_failed_p0_run_is_logged_before_the_escalation_it_opens(batch, run):
    AgentRun.objects.filter(id=run.id).update(priority=0, status=RunStatus.RUNNING)
    attempt = RunAttempt.objects.create(run=run, number=1, not_before=timezone.now(), status=AttemptStatus.RUNNING)
    end = transitions.AttemptEnd(status=AttemptStatus.FAILED, exit_code=1, error="exit code 1")
    assert transitions.attempt_end(attempt, end, backoff_cap=0)
    kinds = list(RunEvent.objects.filter(batch=batch).values_list("kind", flat=True))
    assert kinds == [EventKind.ATTEMPT_FAILED, EventKind.RUN_FAILED, EventKind.ESCALATION_OPENED]
    assert Escalation.objects.get(run=run).kind == Escalation.Kind.P0_FAILED


def test_a_late_answer_from_an_ended_attempt_changes_nothing(batch, run):
    AgentRun.objects.filter(id=run.id).update(status=RunStatus.FAILED)
    attempt = RunAttempt.objects.create(run=run, number=1, not_before=timezone.now(), status=AttemptStatus.LOST)
    end = transitions.AttemptEnd(status=AttemptStatus.SUCCEEDED, exit_code=0)
    assert transitions.attempt_end(attempt, end, backoff_cap=0) is False
    assert not RunEvent.objects.exists()


@pytest.mark.parametrize("action", ["accept", "dismiss"])
def test_closing_an_escalation_and_logging_it_are_one_transaction(action, batch, monkeypatch):
    escalation = Escalation.objects.create(batch=batch, kind=Escalation.Kind.VOTE, reason="tie")

    def broken(**kwargs):
        raise DatabaseError("the event log is unavailable")

    monkeypatch.setattr(events, "record", broken)
    with pytest.raises(DatabaseError):
        services.escalation_resolve(escalation=escalation, action=action, note="because", actor=None)
    assert Escalation.objects.get(id=escalation.id).state == Escalation.State.OPEN


def test_a_person_acting_on_a_closed_escalation_is_refused(batch):
    escalation = Escalation.objects.create(batch=batch, kind=Escalation.Kind.VOTE, reason="tie")
    services.escalation_resolve(escalation=escalation, action="accept", actor=None)
    with pytest.raises(ActionRefused, match="no longer open"):
        services.escalation_resolve(escalation=escalation, action="dismiss", note="late", actor=None)
    with pytest.raises(ActionRefused, match="no longer open"):
        services.escalation_assign(escalation=escalation, assignee=None, actor=None)


def test_a_batch_reopens_only_from_an_end(batch):
    assert not transitions.batch_reopen(batch)
    Batch.objects.filter(id=batch.id).update(status=BatchStatus.PARTIAL)
    assert transitions.batch_reopen(batch)
    assert RunEvent.objects.get(batch=batch).kind == EventKind.BATCH_REOPENED


# --- no other module writes a status --------------------------------------------------------

WRITES = {"update", "create", "get_or_create", "update_or_create", "bulk_update"}
STATUS_FIELDS = {"status", "state"}
# The models whose status only transitions change, and the relations that reach them.
OWNED = {"AgentRun", "RunAttempt", "Batch", "Escalation", "MergeStep"}
RELATIONS = {"runs", "attempts", "escalations", "run", "batch", "merge_steps", "merge_step"}
# In-memory rows of those models go by these names (`run`, `other_run`, `attempt`, `batch`, ...).
OWNED_NAME = re.compile(r"run|attempt|batch|escalation|step", re.IGNORECASE)


def chain(node: ast.AST) -> list[str]:
    """Names along an attribute/call chain: `Batch.objects.filter(...).update` gives Batch, objects, filter, update."""
    names = []
    while isinstance(node, ast.Attribute | ast.Call):
        if isinstance(node, ast.Call):
            node = node.func
        else:
            names.append(node.attr)
            node = node.value
    if isinstance(node, ast.Name):
        names.append(node.id)
    return names[::-1]


def status_writes(path: Path) -> list[str]:
    """Status writes on the owned models (`Batch.objects...update(status=...)`, `run.status = ...`) in a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WRITES:
            names = chain(node.func)
            owned = names[0] in OWNED or RELATIONS & set(names[1:])
            if owned and STATUS_FIELDS & {k.arg for k in node.keywords}:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        elif isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for t in ast.walk(target):
                    stored = isinstance(t, ast.Attribute) and isinstance(t.ctx, ast.Store)
                    if stored and t.attr in STATUS_FIELDS and OWNED_NAME.search(chain(t)[0]):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_only_the_transitions_module_writes_a_status():
    owner = ROOT / "spawner" / "engine" / "transitions.py"
    modules = [
        p
        for package in ("spawner", "dashboard")
        for p in sorted((ROOT / package).rglob("*.py"))
        if p != owner and "migrations" not in p.parts
    ]
    assert len(modules) > 30
    assert [w for p in modules for w in status_writes(p)] == []


def test_the_status_check_sees_a_write_when_there_is_one(tmp_path):
    probe = ROOT / "spawner" / "_probe_for_test.py"
    try:
        probe.write_text(
            "def f(run, batch):\n    run.status = 'x'\n    AgentRun.objects.filter(id=1).update(status='y')\n"
            "    batch.runs.filter(key='a').update(status='z')\n    Outbox.objects.update(state='sent')\n"
        )
        lines = [f"spawner/_probe_for_test.py:{n}" for n in (2, 3, 4)]
        assert status_writes(probe) == lines
    finally:
        probe.unlink()


def test_the_architecture_page_lists_every_transition():
    page = (ROOT / "docs" / "architecture.md").read_text()
    assert [name for name in transitions.TABLE if f"| `{name}` |" not in page] == []


def test_cancelling_a_running_run_logs_its_attempt_and_its_run(batch, run):
    AgentRun.objects.filter(id=run.id).update(status=RunStatus.RUNNING)
    RunAttempt.objects.create(run=run, number=1, not_before=timezone.now(), status=AttemptStatus.RUNNING)
    run.refresh_from_db()
    assert transitions.run_cancel(run, error="cancelled by a user")
    kinds = list(RunEvent.objects.filter(batch=batch).values_list("kind", flat=True))
    assert kinds == [EventKind.ATTEMPT_CANCELLED, EventKind.RUN_CANCELLED]


def test_a_harvested_end_is_logged_in_the_same_transaction_before_the_run_ends(batch, run):
    AgentRun.objects.filter(id=run.id).update(status=RunStatus.RUNNING)
    attempt = RunAttempt.objects.create(run=run, number=1, not_before=timezone.now(), status=AttemptStatus.RUNNING)
    end = transitions.AttemptEnd(status=AttemptStatus.SUCCEEDED, exit_code=0, harvested_from="h:1")
    assert transitions.attempt_end(attempt, end, backoff_cap=0)
    kinds = list(RunEvent.objects.filter(batch=batch).values_list("kind", flat=True))
    assert kinds == [EventKind.ATTEMPT_SUCCEEDED, EventKind.ATTEMPT_HARVESTED, EventKind.RUN_SUCCEEDED]


def test_a_merge_step_starts_queued_or_waiting_once_per_run_and_each_move_is_logged(batch, run):
    step = transitions.merge_step_create(batch=batch, run=run, position=0, state=MergeStep.State.QUEUED)
    assert step is not None
    assert transitions.merge_step_create(batch=batch, run=run, position=0, state=MergeStep.State.WAITING) is None
    with pytest.raises(ValueError, match="starts queued or waiting"):
        transitions.merge_step_create(batch=batch, run=run, position=0, state=MergeStep.State.MERGED)
    assert transitions.merge_step_move(step, "merge_step_merged", MergeStep.State.MERGED, merge_commit="abc")
    assert not transitions.merge_step_move(step, "merge_step_conflicted", MergeStep.State.CONFLICT)
    rows = list(RunEvent.objects.filter(batch=batch).values_list("kind", "data"))
    assert [k for k, _ in rows] == [EventKind.MERGE_QUEUED, EventKind.MERGE_MERGED]
    assert rows[1][1]["key"] == "a" and MergeStep.objects.get(id=step.id).merge_commit == "abc"


def test_a_rerun_on_top_queues_a_succeeded_run_with_its_start_and_note(batch, run):
    AgentRun.objects.filter(id=run.id).update(status=RunStatus.SUCCEEDED)
    run.refresh_from_db()
    attempt = transitions.attempt_queue(
        run,
        not_before=timezone.now(),
        reason=EventKind.RUN_RETRIED,
        transition="run_rerun_on_top",
        start_commit="f" * 40,
        prompt_note="the conflict",
    )
    assert attempt is not None and attempt.number == 2
    assert (attempt.start_commit, attempt.prompt_note) == ("f" * 40, "the conflict")
    assert AgentRun.objects.get(id=run.id).status == RunStatus.QUEUED
    # The ordinary retry refuses a succeeded run.
    AgentRun.objects.filter(id=run.id).update(status=RunStatus.SUCCEEDED)
    run.refresh_from_db()
    assert transitions.attempt_queue(run, not_before=timezone.now(), reason=EventKind.RUN_RETRIED) is None
