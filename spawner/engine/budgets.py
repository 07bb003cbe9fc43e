"""Budgets read from the database: a batch's spending and estimates for the scheduler, a person's
spending today, a spec's estimated cost. The rules are pure, in ``spawner.core.budget``."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Q, Sum
from django.utils import timezone

from spawner.core import budget
from spawner.core.words import plural
from spawner.models import AgentRun, AgentType, Batch, Escalation, UserBudget
from spawner.states import RUN_ACTIVE, AgentKind, OutputFormat

PAST_RUNS = 50  # the median of at most this many recent runs of an agent type and role


def past_estimates(pairs: Iterable[tuple[int, str]]) -> dict[tuple[int, str], float | None]:
    """The median cost of recent runs with a known cost, per (agent type id, role)."""
    found: dict[tuple[int, str], float | None] = {}
    for type_id, role in set(pairs):
        costs = list(
            AgentRun.objects.filter(agent_type_id=type_id, role=role, cost_usd__isnull=False)
            .order_by("-id")
            .values_list("cost_usd", flat=True)[:PAST_RUNS]
        )
        found[(type_id, role)] = budget.estimate_for(costs)
    return found


def run_estimates(runs: list[AgentRun]) -> dict[str, float | None]:
    """Each run's expected cost: its declared estimate_usd, else the median of past runs."""
    past = past_estimates((r.agent_type_id, r.role) for r in runs if r.estimate_usd is None)
    return {r.key: r.estimate_usd if r.estimate_usd is not None else past.get((r.agent_type_id, r.role)) for r in runs}


def budget_view(batch: Batch, runs: list[AgentRun]) -> budget.BudgetView | None:
    """What the scheduler needs when the batch or one of its tasks has a budget; None otherwise."""
    run_budgets = {r.key: r.budget_usd for r in runs if r.budget_usd is not None}
    if batch.budget_usd is None and not run_budgets:
        return None
    return budget.BudgetView(
        budget_usd=batch.budget_usd,
        spent_usd=sum(r.cost_usd or 0.0 for r in runs),
        estimates=run_estimates(runs),
        run_budgets=run_budgets,
        run_spent={r.key: r.cost_usd or 0.0 for r in runs if r.key in run_budgets},
        cancel_running=batch.on_budget == "cancel_running",
    )


def skip_reason(batch: Batch, run: AgentRun, view: budget.BudgetView) -> str:
    own = view.run_budgets.get(run.key)
    estimate = view.estimates.get(run.key) or 0.0
    if own is not None and view.run_spent.get(run.key, 0.0) + estimate > own + budget.EPSILON:
        return f"budget: the task's budget {budget.usd(own)} cannot cover its estimate {budget.usd(estimate)}"
    return f"budget: the batch's budget {budget.usd(batch.budget_usd)} is reached (spent {budget.usd(view.spent_usd)})"


def escalate(batch: Batch, view: budget.BudgetView, *, skipped: int, cancelled: int, open_fn) -> None:
    """Open the batch's budget escalation (once while open)."""
    what = [f"{plural(skipped, 'run')} skipped"] if skipped else []
    what += [f"{plural(cancelled, 'running run')} cancelled"] if cancelled else []
    reason = (
        f"budget {budget.usd(batch.budget_usd)} reached: spent {budget.usd(view.spent_usd)}"
        + (f"; {', '.join(what)}" if what else "")
        + "; retrying a skipped run runs it anyway"
    )
    open_fn(batch=batch, run=None, kind=Escalation.Kind.BUDGET, reason=reason)


# --- a person's day -----------------------------------------------------------------------


def spent_today(user) -> float:
    """What the user's batches spent today (runs that ended today or still run), in USD."""
    start = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    total = (
        AgentRun.objects.filter(batch__owner=user)
        .filter(Q(finished_at__gte=start) | Q(status__in=RUN_ACTIVE))
        .aggregate(total=Sum("cost_usd"))["total"]
    )
    return float(total or 0.0)


def daily_budget(user) -> float | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return UserBudget.objects.filter(user=user).values_list("daily_usd", flat=True).first()


def paid_types(names) -> set[str]:
    """The agent types among `names` whose runs spend money: model agents and CLIs whose output format
    reports usage (a plain command reports none)."""
    rows = AgentType.objects.filter(name__in=set(names)).values_list("name", "kind", "output_format")
    return {name for name, kind, fmt in rows if kind == AgentKind.MODEL or fmt != OutputFormat.NONE}


def spec_estimates(tasks) -> dict[str, float | None]:
    """A spec's tasks' expected costs before launch (declared estimate_usd, else past runs)."""
    types = dict(AgentType.objects.filter(name__in={t.agent for t in tasks}).values_list("name", "id"))
    past = past_estimates((types[t.agent], t.role) for t in tasks if t.estimate_usd is None and t.agent in types)
    return {
        t.key: t.estimate_usd if t.estimate_usd is not None else past.get((types.get(t.agent), t.role)) for t in tasks
    }


def plan_cost(tasks, *, budget_usd: float | None = None) -> dict:
    """The estimated cost of a spec, for the plan: total, which tasks have no estimate."""
    estimates = spec_estimates(tasks)
    total, unknown = budget.batch_estimate(estimates)
    paid = paid_types({t.agent for t in tasks})
    return {
        "estimate_usd": total,
        "unknown": unknown,
        # Unknown cost, and of an agent that spends money (a model, or a CLI whose output reports usage).
        "unknown_paid": [t.key for t in tasks if t.key in set(unknown) and t.agent in paid],
        "per_task": estimates,
        "budget_usd": budget_usd,
        "over_budget": budget_usd is not None and total > budget_usd + budget.EPSILON,
    }
