"""Reads for the fan-in pages: a batch's combined result and reviews, the escalations queue, the badge.

As in queries.py, each `*_context` builds what one template (or partial) needs, and the
page views and the relay both call it. Only the queue's "mine" filter depends on who is
looking, and it names its user explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db.models import Prefetch

from dashboard.ids import parse_id
from dashboard.pages.links import page_number, run_url_template
from spawner import selectors
from spawner.models import Aggregation, Batch, Escalation, RunAttempt, RunEvent
from spawner.states import ESCALATION_EVENTS, EventKind

SEVERITY_RANK = {s: i for i, s in enumerate(selectors.SEVERITIES)}
REVIEW_STATES = {"approved": "approved", "changes_requested": "changes requested", "pending": "pending"}


# --- the result page: findings ------------------------------------------------------------


def _by_severity(f: dict) -> tuple:
    return (SEVERITY_RANK.get(f.get("severity"), len(SEVERITY_RANK)), f.get("file") or "", f.get("line") or 0)


def _by_file(f: dict) -> tuple:
    return (not f.get("file"), f.get("file") or "", f.get("line") or 0, _by_severity(f))


def _by_agents(f: dict) -> tuple:
    """Most corroborated first: the findings several agents reported."""
    return (-len(f.get("agents") or []), _by_severity(f))


SORTS = {"severity": _by_severity, "file": _by_file, "agents": _by_agents}


@dataclass(frozen=True)
class FindingFilters:
    severity: str = ""
    file: str = ""
    agent: str = ""
    sort: str = "severity"
    descending: bool = False

    @classmethod
    def from_query(cls, query) -> FindingFilters:
        severity = query.get("severity", "")
        sort = query.get("sort", "severity")
        descending = sort.startswith("-")
        sort = sort.lstrip("-")
        return cls(
            severity=severity if severity in SEVERITY_RANK else "",
            file=query.get("file", "").strip()[:200],
            agent=query.get("agent", "").strip()[:100],
            sort=sort if sort in SORTS else "severity",
            descending=descending and sort in SORTS,
        )

    @property
    def active(self) -> bool:
        return bool(self.severity or self.file or self.agent)

    def querystring(self, **changes) -> str:
        sort = ("-" if self.descending else "") + self.sort
        values = {"severity": self.severity, "file": self.file, "agent": self.agent, "sort": sort, **changes}
        return urlencode({k: v for k, v in values.items() if v and not (k == "sort" and v == "severity")})

    def sort_links(self) -> dict[str, str]:
        """For each column, the query that sorts by it (again: the other way round)."""
        return {
            name: self.querystring(sort=("" if self.descending or name != self.sort else "-") + name) for name in SORTS
        }


def findings(data: dict, filters: FindingFilters) -> list[dict]:
    """The merged findings that pass the filters, in the asked order."""
    text = filters.file.lower()
    kept = [
        f
        for f in data.get("findings") or []
        if (not filters.severity or f.get("severity") == filters.severity)
        and (not text or text in (f.get("file") or "").lower())
        and (not filters.agent or filters.agent in (f.get("agents") or []))
    ]
    return sorted(kept, key=SORTS[filters.sort], reverse=filters.descending)


def findings_context(batch: Batch, data: dict, filters: FindingFilters) -> dict:
    return {
        "batch": batch,
        "strategy": data.get("strategy", ""),
        "filters": filters,
        "findings": findings(data, filters),
        "total_findings": len(data.get("findings") or []),
        "severities": selectors.SEVERITIES,
        "agent_keys": [a["key"] for a in data.get("agents") or []],
        "sort_links": filters.sort_links(),
    }


# --- the result page: header, agents, gaps, reviews ----------------------------------------


def review_context(batch: Batch) -> dict:
    summary = selectors.review_summary(batch)
    return {
        "batch": batch,
        "review_state": summary.state,
        "review_state_label": REVIEW_STATES[summary.state],
        "review": summary,
        "reviews": list(batch.reviews.select_related("author").order_by("id")),
    }


def result_header_context(batch: Batch, agg: Aggregation | None = None) -> dict:
    agg = agg if agg is not None else Aggregation.objects.filter(batch=batch).first()
    data = agg.data if agg else {}
    return {
        **review_context(batch),
        "aggregation": agg,
        "data": data,
        "open_escalations": batch.escalations.filter(state=Escalation.State.OPEN).count(),
    }


def agents(batch: Batch, data: dict) -> list[dict]:
    """Each agent's own result beside the merged one, with its run's page and last output."""
    runs = {r["key"]: r for r in batch.runs.values("id", "key", "output_tail", "error", "agent_type__name")}
    url = run_url_template()
    used = set(data.get("used") or [])
    shown = []
    for agent in data.get("agents") or []:
        run = runs.get(agent["key"], {})
        result = agent.get("result")
        shown.append(
            {
                **agent,
                "url": url.format(run["id"]) if run else "",
                "agent_type": run.get("agent_type__name", ""),
                "output_tail": run.get("output_tail", ""),
                "error": run.get("error", ""),
                "used": agent["key"] in used,
                "own_findings": len(result.get("findings") or []) if isinstance(result, dict) else 0,
            }
        )
    return shown


def result_context(batch: Batch, filters: FindingFilters) -> dict:
    agg = Aggregation.objects.filter(batch=batch).first()
    data = agg.data if agg else {}
    levels = {"escalation": 0, "warning": 1, "note": 2}
    return {
        **result_header_context(batch, agg),
        **findings_context(batch, data, filters),
        "agents": agents(batch, data),
        "notes": sorted(data.get("notes") or [], key=lambda n: levels.get(n.get("level"), 3)),
        "unused": sorted((data.get("unused") or {}).items()),
    }


def batch_fanin(batch: Batch) -> dict:
    """What the batch page's header says about the fan-in: a result, its review, open escalations."""
    return {
        "has_result": Aggregation.objects.filter(batch=batch).exists(),
        "review_state": selectors.review_state(batch),
        "open_escalations": batch.escalations.filter(state=Escalation.State.OPEN).count(),
    }


# --- the escalations queue ----------------------------------------------------------------


SHOW = (("open", "Open"), ("all", "All"), ("mine", "Assigned to me"))


@dataclass(frozen=True)
class QueueFilters:
    show: str = "open"
    batch: int | None = None
    page: int = 1

    @classmethod
    def from_query(cls, query) -> QueueFilters:
        show = query.get("show", "open")
        batch = query.get("batch", "")
        page = page_number(query)
        show = show if show in dict(SHOW) else "open"
        return cls(show=show, batch=parse_id(batch), page=page)

    def querystring(self, **changes) -> str:
        values = {"show": self.show, "batch": self.batch, "page": self.page, **changes}
        return urlencode(
            {
                k: v
                for k, v in values.items()
                if v and not (k == "page" and v == 1) and not (k == "show" and v == "open")
            }
        )


def queue(filters: QueueFilters, user_id: int | None):
    """Open escalations first, newest first within each group."""
    return selectors.escalation_queue(show=filters.show, batch=filters.batch, user_id=user_id)


@dataclass
class Entry:
    """One line of an escalation's record: when, who, what."""

    at: datetime
    who: str
    what: str
    note: str = ""


def _entry(event: RunEvent) -> Entry:
    data = event.data or {}
    who = event.actor.get_username() if event.actor else "Spawner"
    if event.kind == EventKind.ESCALATION_OPENED:
        return Entry(event.created_at, who, "opened it", data.get("reason", ""))
    if event.kind == EventKind.ESCALATION_ASSIGNED:
        return Entry(event.created_at, who, f"assigned it to {data.get('assignee') or 'nobody'}")
    resolution = data.get("resolution", "")
    what = {
        "retried": "resolved it by retrying the run",
        "accepted": "accepted the partial result",
        "dismissed": "dismissed it",
        "superseded": "closed it: the run succeeded later",
    }.get(resolution, f"{event.kind.removeprefix('escalation.')} it")
    return Entry(event.created_at, who, what, data.get("note", ""))


def cards(escalation_ids) -> list[Escalation]:
    """Escalations with everything their card shows: batch, run, attempts, who did what."""
    ids = list(escalation_ids)
    found = {
        e.id: e
        for e in Escalation.objects.filter(id__in=ids)
        .select_related("batch", "run", "run__agent_type", "assignee", "resolved_by")
        .prefetch_related(Prefetch("run__attempts", queryset=RunAttempt.objects.order_by("number")))
    }
    records: dict[int, list[Entry]] = {i: [] for i in found}
    events = RunEvent.objects.filter(
        batch_id__in={e.batch_id for e in found.values()}, kind__in=ESCALATION_EVENTS
    ).select_related("actor")
    for event in events.order_by("id"):
        number = (event.data or {}).get("escalation")
        if number in records:
            records[number].append(_entry(event))
    url = run_url_template()
    shown = []
    for i in ids:
        if i in found:
            e = found[i]
            e.record = records[i]
            e.run_url = url.format(e.run_id) if e.run_id else ""
            shown.append(e)
    return shown


def teammates() -> list:
    users = get_user_model()
    return list(users.objects.filter(is_active=True).order_by(users.USERNAME_FIELD))


def counts_context(filters: QueueFilters) -> dict:
    return {
        "filters": filters,
        "tabs": [(show, label, filters.querystring(show=show, page=1)) for show, label in SHOW],
        "every_batch_query": filters.querystring(batch=None, page=1),
        "open_count": Escalation.objects.filter(state=Escalation.State.OPEN).count(),
        "all_count": Escalation.objects.count(),
    }


def queue_context(filters: QueueFilters, user_id: int | None) -> dict:
    page = Paginator(queue(filters, user_id), settings.DASHBOARD["PAGE_SIZE"]).get_page(filters.page)
    return {
        **counts_context(filters),
        "page": page,
        "escalations": cards(e.id for e in page.object_list),
        "teammates": teammates(),
        "prev_query": filters.querystring(page=page.number - 1) if page.has_previous() else None,
        "next_query": filters.querystring(page=page.number + 1) if page.has_next() else None,
    }


def card_context(escalation_id: int) -> dict:
    return {"e": cards([escalation_id])[0], "teammates": teammates()}


def badge_context() -> dict:
    return {"open_escalations": selectors.open_escalations_count()}
