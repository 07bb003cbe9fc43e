"""Scheduling properties: random batches driven to the end, the limits checked at every step.

Each example is a random DAG (edges only from lower to higher index, so no cycle), random
priorities, agent types, per-type caps and stagger, max_parallel and failure policy. The
simulation calls `decide`, marks the runs it starts queued and then running, finishes some
running runs with random outcomes, and repeats.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from spawner.core import planning, scheduling
from spawner.states import RUN_ACTIVE, RUN_TERMINAL, BatchStatus, RunStatus

TYPES = ("claude", "codex", "shell")
OUTCOMES = (RunStatus.SUCCEEDED,) * 3 + (RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.LOST)
DEAD = RUN_TERMINAL - {RunStatus.SUCCEEDED}
EXAMPLES = settings(max_examples=120, deadline=None)


@dataclass(frozen=True)
class Batch:
    runs: tuple[scheduling.RunView, ...]  # all pending, in spec order
    max_parallel: int
    sequential: bool
    fail_fast: bool
    caps: dict[str, int]
    stagger: dict[str, float]

    @property
    def capacity(self) -> int:
        return 1 if self.sequential else self.max_parallel

    @property
    def step_bound(self) -> int:
        return 4 * len(self.runs) + 10


@dataclass(frozen=True)
class Step:
    now: float
    before: dict[str, str]  # statuses decide saw
    decision: scheduling.Decision
    after: dict[str, str]  # statuses once the decision is applied


@st.composite
def batches(draw) -> Batch:
    n = draw(st.integers(1, 10))
    keys = [f"t{i}" for i in range(n)]
    deps = {
        key: tuple(keys[j] for j in sorted(draw(st.sets(st.integers(0, i - 1), max_size=3)))) if i else ()
        for i, key in enumerate(keys)
    }
    priority = {key: draw(st.integers(0, 2)) for key in keys}
    kind = {key: draw(st.sampled_from(TYPES)) for key in keys}
    plan = [planning.PlanTask(key=k, depends_on=deps[k], priority=priority[k]) for k in keys]
    order = {key: i for i, key in enumerate(planning.plan_order(plan))}
    runs = tuple(
        scheduling.RunView(
            key=k,
            status=RunStatus.PENDING,
            priority=priority[k],
            depends_on=deps[k],
            agent_type=kind[k],
            order=order[k],
        )
        for k in keys
    )
    return Batch(
        runs=runs,
        max_parallel=draw(st.integers(1, 4)),
        sequential=draw(st.booleans()),
        fail_fast=draw(st.booleans()),
        caps=draw(st.dictionaries(st.sampled_from(TYPES), st.integers(1, 3))),
        stagger=draw(st.dictionaries(st.sampled_from(TYPES), st.sampled_from([0.5, 1.0, 3.0]))),
    )


def simulate(data: st.DataObject, batch: Batch) -> list[Step]:
    """Drive the batch until decide says it is finished, or the step bound runs out."""
    status = {r.key: r.status for r in batch.runs}
    kind = {r.key: r.agent_type for r in batch.runs}
    next_start: dict[str, float] = {}
    steps: list[Step] = []
    for tick in range(batch.step_bound):
        now = float(tick)
        limits = scheduling.Limits(
            max_parallel=batch.max_parallel,
            sequential=batch.sequential,
            fail_fast=batch.fail_fast,
            type_caps=batch.caps,
            type_active=Counter(kind[k] for k, s in status.items() if s in RUN_ACTIVE),
            type_stagger=batch.stagger,
            type_next_start=next_start,
        )
        views = [scheduling.RunView(**{**r.__dict__, "status": status[r.key]}) for r in batch.runs]
        before = dict(status)
        decision = scheduling.decide(views, limits, now)
        next_start = decision.type_next_start
        status.update(dict.fromkeys(decision.skip, RunStatus.SKIPPED))
        status.update(dict.fromkeys(decision.cancel, RunStatus.CANCELLED))
        status.update(dict.fromkeys((key for key, _ in decision.start), RunStatus.QUEUED))
        steps.append(Step(now, before, decision, dict(status)))
        if decision.finished:
            break
        for key in [k for k, s in status.items() if s == RunStatus.QUEUED]:
            status[key] = RunStatus.RUNNING
        running = sorted(k for k, s in status.items() if s == RunStatus.RUNNING)
        if running:
            for key in data.draw(st.lists(st.sampled_from(running), min_size=1, unique=True)):
                status[key] = data.draw(st.sampled_from(OUTCOMES))
    return steps


@EXAMPLES
@given(st.data(), batches())
def test_it_never_has_more_runs_active_than_max_parallel(data, batch):
    for step in simulate(data, batch):
        assert sum(s in RUN_ACTIVE for s in step.after.values()) <= batch.capacity


@EXAMPLES
@given(st.data(), batches())
def test_it_never_has_more_runs_of_a_type_active_than_its_cap(data, batch):
    kind = {r.key: r.agent_type for r in batch.runs}
    for step in simulate(data, batch):
        active = Counter(kind[k] for k, s in step.after.items() if s in RUN_ACTIVE)
        for agent_type, cap in batch.caps.items():
            assert active[agent_type] <= cap


@EXAMPLES
@given(st.data(), batches())
def test_it_never_starts_a_run_before_all_its_dependencies_succeeded(data, batch):
    deps = {r.key: r.depends_on for r in batch.runs}
    for step in simulate(data, batch):
        for key, not_before in step.decision.start:
            assert step.before[key] == RunStatus.PENDING
            assert all(step.before[dep] == RunStatus.SUCCEEDED for dep in deps[key])
            assert not_before >= step.now


@EXAMPLES
@given(st.data(), batches())
def test_it_only_skips_a_run_whose_dependency_did_not_succeed(data, batch):
    deps = {r.key: r.depends_on for r in batch.runs}
    for step in simulate(data, batch):
        for key in step.decision.skip:
            assert step.before[key] == RunStatus.PENDING
            assert any(step.after[dep] in DEAD for dep in deps[key])


@EXAMPLES
@given(st.data(), batches())
def test_it_always_finishes_with_every_run_terminal(data, batch):
    steps = simulate(data, batch)
    last = steps[-1]
    assert last.decision.finished, f"not finished after {batch.step_bound} steps: {last.after}"
    assert all(s in RUN_TERMINAL for s in last.after.values())
    assert not any(step.decision.finished for step in steps[:-1])
    statuses = set(last.after.values())
    if statuses == {RunStatus.SUCCEEDED}:
        assert last.decision.outcome == BatchStatus.SUCCEEDED
    elif batch.fail_fast or RunStatus.SUCCEEDED not in statuses:
        assert last.decision.outcome == BatchStatus.FAILED
    else:
        assert last.decision.outcome == BatchStatus.PARTIAL


@EXAMPLES
@given(st.data(), batches())
def test_under_fail_fast_nothing_starts_once_a_run_has_failed(data, batch):
    failed = {RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.LOST}
    for step in simulate(data, batch):
        if batch.fail_fast and failed & set(step.before.values()):
            assert step.decision.start == []
            assert not any(s in RUN_ACTIVE or s == RunStatus.PENDING for s in step.after.values())


@EXAMPLES
@given(st.data(), batches())
def test_a_ready_run_is_passed_over_only_for_its_types_cap(data, batch):
    by_key = {r.key: r for r in batch.runs}
    for step in simulate(data, batch):
        starts = {key for key, _ in step.decision.start}
        if not starts:
            continue
        last_started = max(starts, key=lambda k: _rank(batch, by_key[k]))
        active = Counter(by_key[k].agent_type for k, s in step.after.items() if s in RUN_ACTIVE)
        for run in batch.runs:
            ready = step.after[run.key] == RunStatus.PENDING and all(
                step.after[d] == RunStatus.SUCCEEDED for d in run.depends_on
            )
            if ready and _rank(batch, run) < _rank(batch, by_key[last_started]):
                assert active[run.agent_type] >= batch.caps.get(run.agent_type, len(batch.runs) + 1)


def _rank(batch: Batch, run: scheduling.RunView) -> tuple[int, int]:
    return (run.order, 0) if batch.sequential else (run.priority, run.order)


@EXAMPLES
@given(st.data(), batches())
def test_starts_of_a_staggered_type_are_spaced_by_its_stagger(data, batch):
    kind = {r.key: r.agent_type for r in batch.runs}
    times: dict[str, list[float]] = {}
    for step in simulate(data, batch):
        for key, not_before in step.decision.start:
            times.setdefault(kind[key], []).append(not_before)
    for agent_type, stagger in batch.stagger.items():
        spaced = times.get(agent_type, [])
        assert all(b - a >= stagger for a, b in zip(spaced, spaced[1:], strict=False))
