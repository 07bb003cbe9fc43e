"""The stats page: which agent is best, per agent type, model or role over a period; the same as JSON.

Reads only (spawner.selectors.agent_stats). Trend charts are inline SVG drawn here, no JS library;
every label is escaped.
"""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, JsonResponse
from django.shortcuts import render
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET

from spawner import selectors

PERIOD_CHOICES = [("7", "7 days"), ("30", "30 days"), ("90", "90 days"), ("all", "All time")]
GROUP_CHOICES = [("agent_type", "Agent type"), ("model", "Model"), ("role", "Role")]
# (column, heading, how to show it)
COLUMNS = [
    ("group", "Group", "text"),
    ("runs", "Runs", "int"),
    ("success_rate", "Success", "pct"),
    ("gate_pass_rate", "Gate pass", "pct"),
    ("median_duration", "Median time", "secs"),
    ("p90_duration", "p90 time", "secs"),
    ("median_cost", "Median cost", "usd"),
    ("median_tokens", "Median tokens", "int"),
    ("cost_per_finding", "Cost / finding", "usd"),
    ("retries", "Retries", "int"),
    ("rate_limit_waits", "Rate-limit waits", "int"),
]


def _params(request: HttpRequest) -> dict:
    return {
        "group_by": request.GET.get("group", "agent_type"),
        "period": request.GET.get("period", "30"),
        "sort": request.GET.get("sort", "-runs"),
    }


def _fmt(value, how: str) -> str:
    if value is None:
        return "–"
    if how == "pct":
        return f"{value * 100:.0f}%"
    if how == "secs":
        return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"
    if how == "usd":
        return f"${value:.4f}" if value < 1 else f"${value:.2f}"
    if how == "int":
        return f"{value:,.0f}"
    return str(value)


def sparkline(points: list[dict], field: str, *, label: str, width: int = 96, height: int = 22, top=None) -> str:
    """A small inline SVG line of one field per day (None: a gap), its label escaped."""
    n = len(points)
    values = [p[field] for p in points]
    known = [v for v in values if v is not None]
    peak = top if top is not None else max(known, default=0) or 1
    step = width / max(n - 1, 1)
    segments: list[list[str]] = [[]]
    for i, v in enumerate(values):
        if v is None:
            if segments[-1]:
                segments.append([])
            continue
        x = i * step
        y = height - 2 - (v / peak) * (height - 4)
        segments[-1].append(f"{x:.1f},{y:.1f}")
    lines = "".join(
        f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{" ".join(s)}"/>'
        if len(s) > 1
        else f'<circle r="1.5" fill="currentColor" cx="{s[0].split(",")[0]}" cy="{s[0].split(",")[1]}"/>'
        for s in segments
        if s
    )
    title = escape(label, quote=True)
    return (
        f'<svg class="spark" role="img" aria-label="{title}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg"><title>{title}</title>'
        f'<line x1="0" y1="{height - 1}" x2="{width}" y2="{height - 1}" stroke="#ccc" stroke-width="1"/>{lines}</svg>'
    )


def _decorate(data: dict, params: dict) -> dict:
    """Rows for the template: formatted cells, charts, sort links."""
    rows = []
    for g in data["groups"]:
        first, last = (g["trend"][0]["day"], g["trend"][-1]["day"]) if g["trend"] else ("", "")
        cells = []
        for column, _heading, how in COLUMNS[1:]:
            text = _fmt(g[column], how)
            note = ""
            if column == "median_cost" and g["cost_unknown"]:
                note = f"{g['cost_unknown']} unknown"
            elif column == "success_rate" and g["decided"]:
                note = f"{g['succeeded']}/{g['decided']}"
            elif column == "gate_pass_rate" and g["gated"]:
                note = f"{g['gate_passed']}/{g['gated']}"
            elif column == "cost_per_finding" and g["findings"]:
                note = f"{g['findings']} findings"
            cells.append({"column": column, "text": text, "note": note})
        rows.append(
            {
                "group": g["group"],
                "cells": cells,
                "runs_chart": mark_safe(
                    sparkline(g["trend"], "runs", label=f"{g['group']}: runs per day, {first} to {last}")
                ),
                "success_chart": mark_safe(
                    sparkline(
                        g["trend"],
                        "success_rate",
                        top=1,
                        label=f"{g['group']}: success rate per day, {first} to {last}",
                    )
                ),
            }
        )
    current = data["sort"].lstrip("-")
    desc = data["sort"].startswith("-")
    headings = []
    for column, heading, _how in COLUMNS:
        if column == current:
            new = column if desc else f"-{column}"
            arrow = " ↓" if desc else " ↑"
        else:
            new = column if column == "group" else f"-{column}"
            arrow = ""
        query = urlencode({"group": data["group_by"], "period": data["period"], "sort": new})
        headings.append(
            {"column": column, "heading": heading + arrow, "href": f"?{query}", "active": column == current}
        )
    return {
        "stats": data,
        "rows": rows,
        "headings": headings,
        "period_choices": PERIOD_CHOICES,
        "group_choices": GROUP_CHOICES,
        "json_query": urlencode({"group": data["group_by"], "period": data["period"], "sort": data["sort"]}),
    }


@require_GET
@login_required
def stats_page(request: HttpRequest):
    params = _params(request)
    data = selectors.agent_stats(**params)
    return render(request, "dashboard/stats.html", _decorate(data, params))


@require_GET
@login_required
def stats_json(request: HttpRequest):
    return JsonResponse(selectors.agent_stats(**_params(request)))
