"""Pure scheduling: given the runs' states, the limits and the clock, what happens now.

`decide` is called after every change to a batch. It never does I/O; the caller
applies its decision in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from spawner.core import budget as budgets
from spawner.core import ratelimit
from spawner.core.rules import batch_outcome
from spawner.states import RUN_ACTIVE, RUN_FAILED, RUN_TERMINAL, RunStatus

# A dependency in one of these states can no longer succeed.
_DEAD = RUN_TERMINAL - {RunStatus.SUCCEEDED}


@dataclass(frozen=True)
class RunView:
    key: str
    status: str
    priority: int = 1
    depends_on: tuple[str, ...] = ()
    agent_type: str = ""
    order: int = 0  # plan order


@dataclass(frozen=True)
class Limits:
    max_parallel: int
    sequential: bool = False
    fail_fast: bool = False
    cancel_requested: bool = False
    race: bool = False  # first_success: the first run to succeed wins, the rest are cancelled
    type_caps: Mapping[str, int] = field(default_factory=dict)
    # Active runs of each agent type across every batch, this one included.
    type_active: Mapping[str, int] = field(default_factory=dict)
    type_stagger: Mapping[str, float] = field(default_factory=dict)
    # The earliest time (seconds) the next run of a type may start.
    type_next_start: Mapping[str, float] = field(default_factory=dict)
    # Rate limits: at most `type_rpm` starts of a type in any minute, given its starts in the last
    # minute and those already scheduled (`type_starts`); no start while the tokens its calls used
    # in the last minute (`type_tokens`: (when, tokens)) reach `type_tpm`.
    type_rpm: Mapping[str, int] = field(default_factory=dict)
    type_starts: Mapping[str, Sequence[float]] = field(default_factory=dict)
    type_tpm: Mapping[str, int] = field(default_factory=dict)
    type_tokens: Mapping[str, Sequence[tuple[float, int]]] = field(default_factory=dict)
    budget: budgets.BudgetView | None = None  # the batch's and its tasks' budgets (spawner.core.budget)


@dataclass
class Decision:
    start: list[tuple[str, float]] = field(default_factory=list)  # (key, not before)
    skip: list[str] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)
    finished: bool = False
    outcome: str | None = None
    type_next_start: dict[str, float] = field(default_factory=dict)
    # Budgets: pending runs skipped and running ones cancelled for "budget"; escalate when reached.
    budget_skip: list[str] = field(default_factory=list)
    budget_cancel: list[str] = field(default_factory=list)
    budget_reached: bool = False


def skipped_by_failed_dependencies(runs: Sequence[RunView]) -> list[str]:
    """Pending runs that can never start because a dependency (transitively) did not succeed."""
    status = {r.key: r.status for r in runs}
    skipped: list[str] = []
    changed = True
    while changed:
        changed = False
        for run in runs:
            if status[run.key] == RunStatus.PENDING and any(status.get(dep) in _DEAD for dep in run.depends_on):
                status[run.key] = RunStatus.SKIPPED
                skipped.append(run.key)
                changed = True
    return skipped


def decide(runs: Sequence[RunView], limits: Limits, now: float) -> Decision:
    decision = Decision(type_next_start=dict(limits.type_next_start))
    status = {r.key: r.status for r in runs}

    stop_all = (
        limits.cancel_requested
        or (limits.fail_fast and any(s in RUN_FAILED for s in status.values()))
        or (limits.race and any(s == RunStatus.SUCCEEDED for s in status.values()))
    )
    if stop_all:
        decision.cancel = [r.key for r in runs if r.status not in RUN_TERMINAL]
        for key in decision.cancel:
            status[key] = RunStatus.CANCELLED
    else:
        decision.skip = skipped_by_failed_dependencies(runs)
        for key in decision.skip:
            status[key] = RunStatus.SKIPPED
        _start_ready(runs, status, limits, now, decision)
        if limits.budget is not None:
            _within_budget(status, limits.budget, decision)

    if all(s in RUN_TERMINAL for s in status.values()):
        decision.finished = True
        decision.outcome = batch_outcome(
            list(status.values()),
            cancel_requested=limits.cancel_requested,
            fail_fast=limits.fail_fast,
            race=limits.race,
        )
    return decision


def _within_budget(status: dict[str, str], view: budgets.BudgetView, decision: Decision) -> None:
    """The budgets trim what was about to start (see spawner.core.budget)."""
    started = {key for key, _ in decision.start}
    before = {k: RunStatus.PENDING if k in started else s for k, s in status.items()}
    kept = budgets.apply(before, decision.start, view)
    for key in started:
        status[key] = RunStatus.PENDING
    decision.start = kept.start
    for key, _ in kept.start:
        status[key] = RunStatus.QUEUED
    decision.budget_skip, decision.budget_cancel, decision.budget_reached = kept.skip, kept.cancel, kept.reached
    for key in kept.skip:
        status[key] = RunStatus.SKIPPED
    for key in kept.cancel:
        status[key] = RunStatus.CANCELLED


def _start_ready(
    runs: Sequence[RunView], status: dict[str, str], limits: Limits, now: float, decision: Decision
) -> None:
    capacity = 1 if limits.sequential else limits.max_parallel
    slots = capacity - sum(1 for s in status.values() if s in RUN_ACTIVE)
    if slots <= 0:
        return
    ready = [
        r
        for r in runs
        if status[r.key] == RunStatus.PENDING and all(status.get(dep) == RunStatus.SUCCEEDED for dep in r.depends_on)
    ]
    # Sequential mode: strictly plan order. Parallel: P0 before P1 before P2.
    ready.sort(key=(lambda r: r.order) if limits.sequential else (lambda r: (r.priority, r.order)))
    active = dict(limits.type_active)
    starts = {kind: list(times) for kind, times in limits.type_starts.items()}
    for run in ready:
        if slots == 0:
            break
        kind = run.agent_type
        cap = limits.type_caps.get(kind)
        if cap is not None and active.get(kind, 0) >= cap:
            if limits.sequential:
                break  # wait for this run's type rather than leave plan order
            continue
        not_before = max(now, decision.type_next_start.get(kind, now))
        not_before = _rate_limited_start(kind, not_before, limits, starts, now)
        stagger = limits.type_stagger.get(kind, 0.0)
        if stagger:
            decision.type_next_start[kind] = not_before + stagger
        decision.start.append((run.key, not_before))
        status[run.key] = RunStatus.QUEUED
        active[kind] = active.get(kind, 0) + 1
        slots -= 1


def _rate_limited_start(
    kind: str, not_before: float, limits: Limits, starts: dict[str, list[float]], now: float
) -> float:
    """The start moved past the type's tokens-per-minute and requests-per-minute limits; the start is counted."""
    if tpm := limits.type_tpm.get(kind):
        not_before = max(not_before, ratelimit.tokens_wait_until(limits.type_tokens.get(kind, ()), tpm, now))
    if rpm := limits.type_rpm.get(kind):
        times = starts.setdefault(kind, [])
        not_before = ratelimit.next_request_at(times, rpm, not_before)
        times.append(not_before)
    return not_before
