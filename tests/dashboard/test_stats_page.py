"""The stats page and its JSON: figures from seeded runs, sorting, period, escaping, empty state."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from spawner.models import AgentRun, AgentType, Batch, RunAttempt, RunEvent

pytestmark = pytest.mark.django_db


def seed_run(
    batch,
    agent,
    *,
    key,
    status="succeeded",
    role="",
    days_ago=1,
    duration=10.0,
    cost=None,
    tokens=0,
    findings=0,
    attempt=1,
    rate_limited=0,
    gate=None,
    model=None,
):
    finished = timezone.now() - timedelta(days=days_ago, minutes=1)
    usage = {"input_tokens": tokens, "output_tokens": 0, "cost_usd": cost, "models": [model] if model else []}
    run = AgentRun.objects.create(
        batch=batch,
        key=key,
        agent_type=agent,
        role=role,
        timeout=60,
        order=0,
        status=status,
        attempt=attempt,
        finished_at=finished,
        duration_seconds=duration,
        cost_usd=cost,
        usage=usage,
        result={"findings": [{"title": str(i)} for i in range(findings)]} if findings else None,
    )
    for n in range(1, attempt + 1):
        RunAttempt.objects.create(
            run=run, number=n, not_before=finished, status="rate_limited" if n <= rate_limited else status
        )
    if gate is not None:
        RunEvent.objects.create(batch=batch, run=run, attempt=attempt, kind="run.gate", data={"exit_code": gate})
    return run


@pytest.fixture
def seeded(db):
    batch = Batch.objects.create(name="s", spec={})
    fast = AgentType.objects.create(name="fast", argv=["true"])
    slow = AgentType.objects.create(name="slow", argv=["true"])
    seed_run(batch, fast, key="f1", duration=10, cost=0.10, tokens=100, findings=2, gate=0, model="m-1")
    seed_run(batch, fast, key="f2", duration=20, cost=0.30, tokens=300, findings=2, gate=1, model="m-1")
    seed_run(
        batch,
        fast,
        key="f3",
        status="failed",
        duration=30,
        cost=None,
        tokens=200,
        attempt=3,
        rate_limited=1,
        model="m-1",
    )
    seed_run(batch, slow, key="s1", duration=100, cost=1.0, tokens=1000, role="<script>alert(1)</script>")
    seed_run(batch, slow, key="old", duration=500, cost=9.0, days_ago=40)  # outside 30 days
    return batch


def test_json_figures(signed_in, seeded):
    data = signed_in.get("/stats.json?period=30").json()
    assert data["runs"] == 4 and data["period"] == "30" and data["group_by"] == "agent_type"
    fast = next(g for g in data["groups"] if g["group"] == "fast")
    assert fast["runs"] == 3
    assert fast["success_rate"] == pytest.approx(2 / 3)
    assert fast["gate_pass_rate"] == 0.5 and fast["gated"] == 2
    assert fast["median_duration"] == 20 and fast["p90_duration"] == pytest.approx(28)
    assert fast["median_cost"] == pytest.approx(0.2) and fast["cost_unknown"] == 1
    assert fast["median_tokens"] == 200
    assert fast["cost_per_finding"] == pytest.approx(0.1)
    assert fast["retries"] == 1 and fast["rate_limit_waits"] == 1  # a wait is not a retry
    assert len(fast["trend"]) == 30 and sum(p["runs"] for p in fast["trend"]) == 3


def test_period_filter(signed_in, seeded):
    assert signed_in.get("/stats.json?period=7").json()["runs"] == 4
    everything = signed_in.get("/stats.json?period=all").json()
    assert everything["runs"] == 5
    slow = next(g for g in everything["groups"] if g["group"] == "slow")
    assert slow["runs"] == 2 and slow["p90_duration"] == pytest.approx(460)


def test_sorting(signed_in, seeded):
    by_runs = signed_in.get("/stats.json?sort=-runs").json()
    assert [g["group"] for g in by_runs["groups"]] == ["fast", "slow"]
    by_duration = signed_in.get("/stats.json?sort=-median_duration").json()
    assert [g["group"] for g in by_duration["groups"]] == ["slow", "fast"]
    assert by_duration["sort"] == "-median_duration"
    page = signed_in.get("/stats/?sort=-median_duration").content.decode()
    assert page.index(">slow<") < page.index(">fast<")
    page = signed_in.get("/stats/?sort=median_duration").content.decode()
    assert page.index(">fast<") < page.index(">slow<")
    assert signed_in.get("/stats.json?sort=bogus").json()["sort"] == "-runs"


def test_group_by_model_and_role(signed_in, seeded):
    models = {g["group"] for g in signed_in.get("/stats.json?group=model").json()["groups"]}
    assert "m-1" in models
    roles = {g["group"] for g in signed_in.get("/stats.json?group=role").json()["groups"]}
    assert roles == {"(no role)", "<script>alert(1)</script>"}


def test_page_escapes_names(signed_in, seeded):
    evil = AgentType.objects.create(name="<script>alert(2)</script>", argv=["true"])
    seed_run(seeded, evil, key="e1")
    for group in ("role", "agent_type"):
        response = signed_in.get(f"/stats/?group={group}")
        html = response.content.decode()
        assert response.status_code == 200
        assert "<script>alert" not in html, group
        assert "&lt;script&gt;alert" in html and "<svg" in html
    assert "1 unknown" in signed_in.get("/stats/").content.decode()  # fast: one run of unknown cost


def test_svg_label_escaped():
    from dashboard.pages.stats import sparkline

    svg = sparkline([{"runs": 1}, {"runs": None}, {"runs": 3}], "runs", label='<script>"x"</script>')
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "<svg" in svg


def test_empty_state(signed_in):
    response = signed_in.get("/stats/")
    assert response.status_code == 200
    assert "No finished runs in this period" in response.content.decode()
    data = signed_in.get("/stats.json").json()
    assert data["runs"] == 0 and data["groups"] == [] and data["overall"] is None


def test_nav_links_to_stats(signed_in):
    assert 'href="/stats/"' in signed_in.get("/").content.decode()
