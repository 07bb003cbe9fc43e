"""Reads that shape batches and runs for the pages and their live fragments.

Each `*_context` function builds what one template needs; the page views and the
relay both call them, so a live fragment is exactly what a reload would show.
Nothing here depends on who is looking: fragments are rendered once for everyone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db.models import Count, F
from django.db.models.fields.json import KT
from django.db.models.functions import Right
from django.utils import timezone

from dashboard.ids import parse_id
from dashboard.pages.fanin_queries import batch_fanin
from dashboard.pages.graph import graph_context
from dashboard.pages.links import page_number, run_url_template
from spawner import selectors
from spawner.models import AgentRun, Batch, Escalation, RunAttempt
from spawner.states import RUN_ACTIVE, RUN_FAILED, RUN_TERMINAL, BatchStatus, Mode, RunStatus

# Bar segments of the progress bar, in the order they are drawn.
SEGMENTS = [
    ("succeeded", {RunStatus.SUCCEEDED}),
    ("failed", set(RUN_FAILED)),
    ("cancelled", {RunStatus.CANCELLED, RunStatus.SKIPPED}),
    ("running", {RunStatus.RUNNING}),
    ("queued", {RunStatus.QUEUED}),
]


@dataclass
class Progress:
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        return sum(n for status, n in self.counts.items() if status in RUN_TERMINAL)

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.counts.items() if status in RUN_FAILED)

    @property
    def active(self) -> int:
        return sum(n for status, n in self.counts.items() if status in RUN_ACTIVE)

    @property
    def segments(self) -> list[tuple[str, int, float]]:
        total = self.total or 1
        found = []
        for name, statuses in SEGMENTS:
            n = sum(self.counts.get(s, 0) for s in statuses)
            if n:
                found.append((name, n, round(100 * n / total, 2)))
        return found

    def summary(self) -> str:
        parts = [f"{n} {status.replace('_', ' ')}" for status, n in sorted(self.counts.items()) if n]
        return ", ".join(parts)


def elapsed(batch: Batch, now: datetime | None = None) -> float:
    """Wall time (busy) so far: final when the batch has ended, growing while it runs."""
    return selectors.batch_timings(batch, now=now)["wall"]


def open_escalations_by_batch(batch_ids) -> dict[int, int]:
    """Open escalations of each of these batches, in one grouped query."""
    rows = (
        Escalation.objects.filter(batch_id__in=list(batch_ids), state=Escalation.State.OPEN)
        .order_by()
        .values_list("batch_id")
        .annotate(n=Count("id"))
    )
    return dict(rows)


# --- batches list -------------------------------------------------------------------------


@dataclass(frozen=True)
class ListFilters:
    status: str = ""
    owner: str = ""  # a user id, or "cli" for batches launched without a user
    page: int = 1

    @classmethod
    def from_query(cls, query) -> ListFilters:
        status = query.get("status", "")
        owner = query.get("owner", "")
        page = page_number(query)
        return cls(
            status=status if status in BatchStatus.values else "",
            owner=owner if owner == "cli" or parse_id(owner) is not None else "",
            page=page,
        )

    def querystring(self, **changes) -> str:
        from urllib.parse import urlencode

        values = {"status": self.status, "owner": self.owner, "page": self.page, **changes}
        return urlencode({k: v for k, v in values.items() if v and not (k == "page" and v == 1)})


def list_context(filters: ListFilters) -> dict:
    batches = Batch.objects.select_related("owner").defer("spec", "spec_text").order_by("-id")
    if filters.status:
        batches = batches.filter(status=filters.status)
    if filters.owner == "cli":
        batches = batches.filter(owner__isnull=True)
    elif filters.owner:
        batches = batches.filter(owner_id=int(filters.owner))
    page = Paginator(batches, settings.DASHBOARD["PAGE_SIZE"]).get_page(filters.page)
    progress = selectors.batches_progress([b.id for b in page.object_list])
    now = timezone.now()
    escalations = open_escalations_by_batch(b.id for b in page.object_list)
    rows = [
        {
            "batch": b,
            "progress": Progress(progress.get(b.id, {})),
            "t": selectors.batch_timings(b, now=now),
            "open_escalations": escalations.get(b.id, 0),
        }
        for b in page.object_list
    ]
    return {
        "page": page,
        "rows": rows,
        "filters": filters,
        "prev_query": filters.querystring(page=page.number - 1) if page.has_previous() else None,
        "next_query": filters.querystring(page=page.number + 1) if page.has_next() else None,
    }


def owners() -> list:
    users = get_user_model()
    return list(users.objects.filter(batch__isnull=False).distinct().order_by(users.USERNAME_FIELD))


# --- one batch ----------------------------------------------------------------------------


def grid_runs(batch_id: int, run_ids=None) -> list[AgentRun]:
    """Runs for the grid: everything but the big text columns, plus the end of the output."""
    runs = (
        AgentRun.objects.filter(batch_id=batch_id)
        .only(
            "id",
            "batch_id",
            "key",
            "status",
            "rate_limited_until",  # "waiting: rate limited"
            "attempt",
            "retries",
            "priority",
            "wave",
            "order",
            "duration_seconds",
            "started_at",
            "error",
            "role",
            "usage",
            "cost_usd",
        )
        .annotate(
            agent_type_name=F("agent_type__name"),  # a name, not a model instance per row
            tail_end=Right("output_tail", 600),
            # The diff size only, not the list of files (a run may change a thousand).
            diff_added=KT("changes__added"),
            diff_removed=KT("changes__removed"),
            diff_changed=KT("changes__changed"),
            diff_outside=KT("changes__outside_scope"),
        )
        .order_by("order")
    )
    if run_ids is not None:
        runs = runs.filter(id__in=list(run_ids))
    runs = list(runs)
    url = run_url_template()
    now = timezone.now()
    for run in runs:
        run.url = url.format(run.id)
        run.diff = diff_size(run)
        run.elapsed = selectors.run_elapsed(run, now=now)
    return runs


def diff_size(run: AgentRun) -> dict | None:
    """+added -removed in n files, and the paths outside its scope; None before its changes are known."""
    if run.diff_changed is None:
        return None
    try:
        outside = json.loads(run.diff_outside) if isinstance(run.diff_outside, str) else run.diff_outside
    except ValueError:
        outside = []
    return {
        "added": int(run.diff_added or 0),
        "removed": int(run.diff_removed or 0),
        "changed": int(run.diff_changed),
        "outside": list(outside or []),
    }


def batch_header_context(batch: Batch) -> dict:
    progress = Progress(selectors.batches_progress([batch.id])[batch.id])
    return {
        **batch_fanin(batch),
        "batch": batch,
        "progress": progress,
        "cost": selectors.batch_cost(batch),
        "t": (t := selectors.batch_timings(batch)),
        "wall": t["wall"],
        "rerun": batch.sequential_reruns.order_by("-id").first(),
        "can_cancel": batch.status == BatchStatus.RUNNING and not batch.cancel_requested,
        "can_retry": progress.failed > 0,
        "can_rerun": batch.mode == Mode.PARALLEL and bool(batch.spec_text),
    }


def batch_context(batch: Batch) -> dict:
    workspace = selectors.workspace_of(batch.id)
    # Worktrees without a merge queue: their disk shows here (with one, the merge section shows it).
    alone = workspace is not None and workspace.isolation == "worktree" and workspace.merge_mode == "none"
    return {
        **batch_header_context(batch),
        "workspace": workspace,
        "workspace_disk": selectors.workspace_disk(batch) if alone else "",
        "runs": grid_runs(batch.id),
        "timeline": timeline(batch, deferred=batch.runs.count() > TIMELINE_INLINE_LANES),
        **graph_context(batch),  # the dependency graph (dashboard/pages/graph.py)
    }


# --- the timeline (Gantt) -----------------------------------------------------------------


@dataclass
class Bar:
    number: int
    status: str
    left: float
    width: float
    seconds: float
    start: float = 0.0  # seconds after the batch's launch
    started_at: datetime | None = None
    exit_code: int | None = None
    ongoing: bool = False


@dataclass
class Lane:
    run_id: int
    key: str
    status: str
    url: str
    bars: list[Bar] = field(default_factory=list)
    after: list[int] = field(default_factory=list)  # the lanes (by position) of its dependencies


@dataclass
class Timeline:
    batch: Batch
    lanes: list[Lane]
    axis_seconds: float
    span_seconds: float
    ticks: list[tuple[float, str]]
    deferred: bool = False  # lanes not read: the page fetches them when the timeline is scrolled to


# A batch page draws at most this many lanes itself; past it the timeline (far below the runs)
# comes when it is scrolled into view, or with the page's first live update.
TIMELINE_INLINE_LANES = 200


_STEPS = [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400]


def _ticks(axis: float) -> list[tuple[float, str]]:
    step = next((s for s in _STEPS if axis / s <= 6), _STEPS[-1])
    ticks, t = [], 0.0
    while t <= axis + 1e-9:
        label = f"{t:g} s" if step < 60 else f"{t / 60:g} min"
        ticks.append((round(100 * t / axis, 2), label))
        t += step
    return ticks


def timeline_span(batch: Batch, now: datetime | None = None) -> float:
    """Seconds from launch to the last moment anything in the batch ran (or now, if running)."""
    now = now or timezone.now()
    if batch.status != BatchStatus.RUNNING and batch.finished_at:
        return max((batch.finished_at - batch.launched_at).total_seconds(), 0.001)
    return max((now - batch.launched_at).total_seconds(), 0.001)


def timeline(
    batch: Batch, axis_seconds: float | None = None, now: datetime | None = None, *, deferred: bool = False
) -> Timeline:
    """Every attempt of every run on one time axis starting at the batch's launch."""
    now = now or timezone.now()
    span = timeline_span(batch, now)
    axis = max(axis_seconds or span, 1.0)
    if deferred:
        return Timeline(batch, [], axis, span, _ticks(axis), deferred=True)
    url = run_url_template()
    rows = batch.runs.order_by("order").values_list("id", "key", "status", "depends_on")
    lanes = {run_id: Lane(run_id, key, status, url.format(run_id), after=deps) for run_id, key, status, deps in rows}
    position = {lane.key: n for n, lane in enumerate(lanes.values())}
    for lane in lanes.values():
        lane.after = [position[d] for d in lane.after or () if d in position]
    attempts = RunAttempt.objects.filter(run__batch_id=batch.id, started_at__isnull=False).values_list(
        "run_id", "number", "status", "started_at", "finished_at", "exit_code"
    )
    origin = batch.launched_at
    for run_id, number, status, started, finished, exit_code in attempts.order_by("run_id", "number"):
        start = (started - origin).total_seconds()
        end = ((finished or now) - origin).total_seconds()
        lanes[run_id].bars.append(
            Bar(
                number=number,
                status=status,
                left=round(100 * max(start, 0) / axis, 3),
                width=round(max(100 * (end - start) / axis, 0.4), 3),
                seconds=max(end - start, 0.0),
                start=start,
                started_at=started,
                exit_code=exit_code,
                ongoing=finished is None,
            )
        )
    return Timeline(batch, list(lanes.values()), axis, span, _ticks(axis))


# --- compare ------------------------------------------------------------------------------


def compare_pair(batch: Batch) -> tuple[Batch, Batch | None]:
    """(the parallel batch, its latest sequential re-run or None)."""
    if batch.sequential_of_id:
        return batch.sequential_of, batch
    return batch, batch.sequential_reruns.order_by("-id").first()


def compare_context(parallel: Batch, sequential: Batch | None) -> dict:
    now = timezone.now()
    sides = [parallel] + ([sequential] if sequential else [])
    axis = max(timeline_span(b, now) for b in sides)
    # Like for like: each batch's own pass, a person's later retries left out (one definition,
    # shared with `spawn --compare`).
    measured = selectors.measured_comparison(parallel, sequential, now=now) if sequential else None
    own = measured["own"] if measured else [selectors.batch_timings(parallel, now=now, own_pass=True)]
    columns = [
        {**batch_header_context(b), "own": own[n], "timeline": timeline(b, axis_seconds=axis, now=now)}
        for n, b in enumerate(sides)
    ]
    return {
        "parallel": parallel,
        "sequential": sequential,
        "columns": columns,
        "measured_speedup": measured["speedup"] if measured else None,
        "left_out": sum(col["own"]["left_out"] for col in columns),
    }


# --- one run ------------------------------------------------------------------------------


def run_context(run: AgentRun) -> dict:
    attempts = list(run.attempts.order_by("-number"))
    current = next((a for a in attempts if a.number == run.attempt), None)
    now = timezone.now()
    for a in attempts:  # a running attempt's time so far (the page ticks it)
        a.elapsed = (now - a.started_at).total_seconds() if a.started_at and not a.finished_at else None
    return {
        "run_elapsed": selectors.run_elapsed(run, now=now),
        "log_size": log_size(current),
        "tail_bytes": settings.SPAWNER["TAIL_BYTES"],
        "run": run,
        "batch": run.batch,
        "attempts": attempts,
        "current": current,
        "can_retry": run.status in RUN_TERMINAL and run.status != RunStatus.SUCCEEDED,
        "can_cancel": run.status not in RUN_TERMINAL,
        "dependents": [
            key
            for key, deps in AgentRun.objects.filter(batch_id=run.batch_id).values_list("key", "depends_on")
            if run.key in deps
        ],
    }


def log_size(attempt: RunAttempt | None) -> int | None:
    """Size of an attempt's full log, or None when this server cannot read it."""
    return selectors.log_size(attempt)
