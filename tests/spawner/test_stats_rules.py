"""The stats math: percentiles, rates, one group's figures, trends, sorting (spawner.core.stats)."""

from __future__ import annotations

from datetime import date

import pytest

from spawner.core import stats


def row(**kw):
    base = {
        "group": "a",
        "status": "succeeded",
        "duration": 1.0,
        "cost": None,
        "tokens": 0,
        "findings": 0,
        "attempts": 1,
        "rate_limited": 0,
        "gate": None,
        "day": "2026-01-01",
    }
    return {**base, **kw}


def test_percentile_interpolates_and_ignores_none():
    assert stats.percentile([], 50) is None
    assert stats.percentile([None], 50) is None
    assert stats.percentile([5], 90) == 5
    assert stats.median([3, 1, 2]) == 2
    assert stats.median([1, 2, 3, 4]) == 2.5
    assert stats.percentile(range(1, 11), 90) == pytest.approx(9.1)
    assert stats.percentile([1, None, 3], 0) == 1
    with pytest.raises(ValueError):
        stats.percentile([1], 101)


def test_rate_without_data_is_none_not_zero():
    assert stats.rate(0, 0) is None
    assert stats.rate(1, 4) == 0.25


def test_summarize_counts_and_unknown_costs():
    rows = [
        row(status="succeeded", duration=10, cost=0.2, tokens=100, findings=2, gate=0),
        row(status="failed", duration=20, cost=None, tokens=300, attempts=3, rate_limited=1, gate=1),
        row(status="succeeded", duration=30, cost=0.4, tokens=200, findings=2, attempts=2, gate=0),
        row(status="cancelled", duration=None, cost=None),
    ]
    s = stats.summarize("a", rows)
    assert s["runs"] == 4
    assert (s["succeeded"], s["decided"]) == (2, 3)
    assert s["success_rate"] == pytest.approx(2 / 3)
    assert (s["gate_passed"], s["gated"]) == (2, 3)
    assert s["median_duration"] == 20
    assert s["p90_duration"] == pytest.approx(28)
    assert s["median_cost"] == pytest.approx(0.3)  # over the known costs only
    assert (s["cost_known"], s["cost_unknown"]) == (2, 2)
    assert s["median_tokens"] == 200  # runs without tokens do not count
    assert s["cost_per_finding"] == pytest.approx(0.6 / 4)
    assert s["retries"] == 2  # attempts beyond the first, less the rate-limit wait
    assert s["rate_limit_waits"] == 1


def test_summarize_all_unknown_costs():
    s = stats.summarize("a", [row(findings=3), row()])
    assert s["median_cost"] is None and s["cost_unknown"] == 2 and s["cost_per_finding"] is None
    assert s["gate_pass_rate"] is None


def test_trend_fills_empty_days():
    rows = [row(day="2026-01-01"), row(day="2026-01-03", status="failed"), row(day="2026-01-03")]
    t = stats.trend(rows, date(2026, 1, 1), date(2026, 1, 3))
    assert [p["runs"] for p in t] == [1, 0, 2]
    assert [p["success_rate"] for p in t] == [1.0, None, 0.5]


def test_sort_groups_none_last_and_unknown_column():
    groups = [
        {"group": "b", "runs": 2, "median_cost": None},
        {"group": "a", "runs": 5, "median_cost": 0.1},
        {"group": "c", "runs": 2, "median_cost": 0.5},
    ]
    assert [g["group"] for g in stats.sort_groups(groups, "-runs")] == ["a", "b", "c"]
    assert [g["group"] for g in stats.sort_groups(groups, "median_cost")] == ["a", "c", "b"]
    assert [g["group"] for g in stats.sort_groups(groups, "-median_cost")] == ["c", "a", "b"]
    assert [g["group"] for g in stats.sort_groups(groups, "group")] == ["a", "b", "c"]
    assert stats.sort_key("drop table") == ("runs", True)


def test_period_and_findings():
    assert stats.period_days("7") == ("7", 7)
    assert stats.period_days("all") == ("all", None)
    assert stats.period_days("x") == ("30", 30)
    assert stats.findings_of({"findings": [1, 2]}) == 2
    assert stats.findings_of({"findings": "many"}) == 0
    assert stats.findings_of(None) == 0
