"""Stats math for "which agent is best": percentiles, rates, one group's figures, daily trends, sorting.

Pure: plain rows (dicts) in, plain figures out. A row is one finished run:
``{"group", "status", "duration", "cost" (None: unknown), "tokens", "findings", "attempts",
"rate_limited", "gate" (None: no gate ran, else the last gate's exit code), "day" ("YYYY-MM-DD")}``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta

SUCCEEDED = "succeeded"
# Outcomes a success rate counts: a cancelled or skipped run says nothing about the agent.
DECIDED = frozenset({"succeeded", "failed", "timed_out", "lost"})
PERIODS = {"7": 7, "30": 30, "90": 90, "all": None}
GROUPS = ("agent_type", "model", "role")
COLUMNS = (
    "group",
    "runs",
    "success_rate",
    "gate_pass_rate",
    "median_duration",
    "p90_duration",
    "median_cost",
    "median_tokens",
    "cost_per_finding",
    "retries",
    "rate_limit_waits",
)


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between closest ranks; None if empty."""
    data = sorted(v for v in values if v is not None)
    if not data:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    pos = (len(data) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    if lo == hi:
        return float(data[lo])
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median(values: Iterable[float]) -> float | None:
    return percentile(values, 50)


def rate(part: int, whole: int) -> float | None:
    """part / whole, None when there is nothing to divide (not 0: "no data" is not "never")."""
    return part / whole if whole else None


def summarize(group: str, rows: Sequence[Mapping]) -> dict:
    """One group's figures. Costs: the median over known costs only, with the count of unknown ones."""
    decided = [r for r in rows if r["status"] in DECIDED]
    succeeded = sum(1 for r in decided if r["status"] == SUCCEEDED)
    gated = [r for r in rows if r.get("gate") is not None]
    gate_passed = sum(1 for r in gated if r["gate"] == 0)
    known = [r for r in rows if r.get("cost") is not None]
    findings = sum(r.get("findings") or 0 for r in known)
    known_cost = sum(r["cost"] for r in known)
    return {
        "group": group,
        "runs": len(rows),
        "succeeded": succeeded,
        "decided": len(decided),
        "success_rate": rate(succeeded, len(decided)),
        "gated": len(gated),
        "gate_passed": gate_passed,
        "gate_pass_rate": rate(gate_passed, len(gated)),
        "median_duration": median(r.get("duration") for r in rows),
        "p90_duration": percentile((r.get("duration") for r in rows), 90),
        "median_cost": median(r["cost"] for r in known),
        "cost_known": len(known),
        "cost_unknown": len(rows) - len(known),
        "total_cost": known_cost if known else None,
        "median_tokens": median(r.get("tokens") for r in rows if r.get("tokens")),
        # Over the runs whose cost is known: their cost / their findings.
        "findings": sum(r.get("findings") or 0 for r in rows),
        "cost_per_finding": known_cost / findings if findings else None,
        # Attempts beyond the first that were retries: a rate-limit wait is counted on its own.
        "retries": sum(max((r.get("attempts") or 0) - 1 - (r.get("rate_limited") or 0), 0) for r in rows),
        "rate_limit_waits": sum(r.get("rate_limited") or 0 for r in rows),
    }


def group_rows(rows: Iterable[Mapping]) -> dict[str, list[Mapping]]:
    groups: dict[str, list[Mapping]] = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    return groups


def trend(rows: Iterable[Mapping], first: date, last: date) -> list[dict]:
    """Runs and success rate per day from first to last (inclusive), empty days included."""
    days: dict[str, list[int]] = {}
    for r in rows:
        counts = days.setdefault(r["day"], [0, 0, 0])
        counts[0] += 1
        if r["status"] in DECIDED:
            counts[1] += 1
            counts[2] += r["status"] == SUCCEEDED
    out = []
    n = (last - first).days
    for i in range(max(n, 0) + 1):
        day = (first + timedelta(days=i)).isoformat()
        runs, decided, ok = days.get(day, [0, 0, 0])
        out.append({"day": day, "runs": runs, "success_rate": rate(ok, decided)})
    return out


def sort_key(sort: str) -> tuple[str, bool]:
    """A sort parameter ("-runs", "median_cost") -> (column, descending); unknown columns sort by runs."""
    desc = sort.startswith("-")
    column = sort.lstrip("-")
    if column not in COLUMNS:
        return "runs", True
    return column, desc


def sort_groups(groups: list[dict], sort: str) -> list[dict]:
    """Sorted by the column; groups without a value (None) always last, ties by name."""
    column, desc = sort_key(sort)
    present = [g for g in groups if g.get(column) is not None]
    missing = [g for g in groups if g.get(column) is None]
    present.sort(key=lambda g: g["group"])
    present.sort(key=lambda g: g[column], reverse=desc)
    missing.sort(key=lambda g: g["group"])
    return present + missing


def period_days(value: str | None) -> tuple[str, int | None]:
    """The period parameter -> (its canonical name, days or None for all); unknown: 30 days."""
    if value in PERIODS:
        return value, PERIODS[value]
    return "30", 30


def findings_of(result) -> int:
    """How many findings a run's result holds (a list under "findings"), 0 otherwise."""
    if isinstance(result, Mapping):
        findings = result.get("findings")
        if isinstance(findings, list):
            return len(findings)
    return 0
