"""Pure: budgets. What a batch is expected to cost, whether a launch fits a person's day, and
which runs may still start while a batch spends.

A batch's budget is kept conservatively: a run starts only while
``spent + the running runs' estimates + its own estimate <= budget``. Once that fails, no new
run starts, the batch's pending runs end ``skipped`` (reason "budget"), the running ones are
cancelled too with ``on_budget: cancel_running``, and the batch escalates. A run whose cost is not
known yet (no declared ``estimate_usd``, no past run of its agent type and role) counts as 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median

from spawner.states import RUN_ACTIVE, RunStatus

EPSILON = 1e-9  # sums of floats: 0.4 + 0.4 + 0.2 may be a hair over 1.0
SKIP_REASON = "budget"
ON_BUDGET = ("skip_pending", "cancel_running")


@dataclass(frozen=True)
class BudgetView:
    """What the scheduler needs to keep a batch within its budget."""

    budget_usd: float | None
    spent_usd: float = 0.0
    # The expected cost of each run (declared, or the median of past runs); None: unknown.
    estimates: Mapping[str, float | None] = field(default_factory=dict)
    # A task's own budget, and what it has spent (all its attempts).
    run_budgets: Mapping[str, float] = field(default_factory=dict)
    run_spent: Mapping[str, float] = field(default_factory=dict)
    cancel_running: bool = False


@dataclass
class BudgetDecision:
    start: list[tuple[str, float]]  # what may still start
    skip: list[str]  # pending runs that end skipped "budget"
    cancel: list[str]  # running runs cancelled (on_budget: cancel_running)
    reached: bool  # the batch's budget stopped something: escalate once
    committed_usd: float  # spent + the estimates of what runs (and starts now)


def estimate_for(past_costs: Sequence[float]) -> float | None:
    """A run's expected cost from earlier runs of its agent type and role: their median."""
    costs = [c for c in past_costs if c is not None]
    return float(median(costs)) if costs else None


def apply(
    status: Mapping[str, str],  # each run's status before these starts, in plan order
    starts: Sequence[tuple[str, float]],
    view: BudgetView,
) -> BudgetDecision:
    """Filter the scheduler's starts through the budgets."""
    est = view.estimates
    committed = view.spent_usd + sum(est.get(k) or 0.0 for k, s in status.items() if s in RUN_ACTIVE)
    budget = view.budget_usd
    reached = budget is not None and committed > budget + EPSILON
    kept: list[tuple[str, float]] = []
    skip: list[str] = []
    for key, when in starts:
        cost = est.get(key) or 0.0
        own = view.run_budgets.get(key)
        if own is not None and view.run_spent.get(key, 0.0) + cost > own + EPSILON:
            skip.append(key)  # its own budget cannot cover it
            continue
        if reached or (budget is not None and committed + cost > budget + EPSILON):
            reached = True
            continue
        kept.append((key, when))
        committed += cost
    cancel: list[str] = []
    if reached:
        started = {k for k, _ in kept}
        skip += [k for k, s in status.items() if s == RunStatus.PENDING and k not in started and k not in skip]
        if view.cancel_running:
            cancel = [k for k, s in status.items() if s in RUN_ACTIVE]
            kept = []
    return BudgetDecision(start=kept, skip=skip, cancel=cancel, reached=reached, committed_usd=committed)


def batch_estimate(estimates: Mapping[str, float | None]) -> tuple[float, list[str]]:
    """(the known total, the keys whose cost is not known)."""
    unknown = sorted(k for k, v in estimates.items() if v is None)
    return sum(v for v in estimates.values() if v is not None), unknown


def confirm_reason(*, estimate: float, threshold: float | None, unknown_paid: int, unknown_limit: int | None) -> str:
    """Why launching a spec needs a person's confirmation ('' when it does not): its known estimate
    is above the threshold, or many of its runs would spend money at a cost nobody can estimate yet
    (a first fan-out of a paid agent: no declared estimate_usd and no past run)."""
    if threshold is not None and estimate > threshold + EPSILON:
        return f"the estimated cost {usd(estimate)} is above {usd(threshold)}"
    if unknown_limit is not None and unknown_limit > 0 and unknown_paid >= unknown_limit:
        return (
            f"{unknown_paid} runs of agents that report a cost have no estimate (no estimate_usd, and no past run "
            f"of their agent type and role with a known cost): {unknown_limit} or more need a confirmation"
        )
    return ""


def daily_refusal(*, daily_usd: float | None, spent_today: float, estimate: float) -> str:
    """Why a launch is refused by its owner's daily budget ('' when it fits)."""
    if daily_usd is None or spent_today + estimate <= daily_usd + EPSILON:
        return ""
    return (
        f"daily budget of {usd(daily_usd)} would be exceeded: spent today {usd(spent_today)} "
        f"+ this batch's estimate {usd(estimate)} = {usd(spent_today + estimate)}"
    )


def usd(value: float | None) -> str:
    """A cost as people read it: $0.0123 below a dollar, $12.34 above."""
    if value is None:
        return "unknown"
    return f"${value:.4f}" if abs(value) < 1 else f"${value:,.2f}"


def retry_fits(
    *,
    budget_usd: float | None,
    spent_usd: float,
    run_budget_usd: float | None,
    run_spent_usd: float,
    next_cost_usd: float,
) -> bool:
    """May a failed run try again? Only if another attempt costing what the last one did (or its
    estimate) keeps the batch and the task within their budgets. No budget: yes."""
    if budget_usd is not None and spent_usd + next_cost_usd > budget_usd + EPSILON:
        return False
    return run_budget_usd is None or run_spent_usd + next_cost_usd <= run_budget_usd + EPSILON
