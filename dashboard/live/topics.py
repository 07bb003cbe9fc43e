"""Live topics: which events concern a page, and the fragments that bring it up to date.

A topic is one thing people watch (the batches list with some filters, a batch, a
run, a comparison, a batch's result, the escalations queue, and the header every page
shows). The relay feeds it events; the topic gathers what changed and,
when due, renders the changed partials once for everyone watching. Fragments are
the same partials the pages render, each with the element id htmx swaps by.

Each update is a list of messages. Table rows travel in messages of their own: an
HTML parser drops a <tr> or <tbody> that follows a <section>, so a message never
mixes the two.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.template.loader import render_to_string

from dashboard.pages import diffs, fanin_queries, graph, merging, queries
from spawner import permissions
from spawner.models import AgentRun, Batch
from spawner.states import ESCALATION_EVENTS, FANIN_EVENTS, MERGE_EVENTS, EventKind

# Group names carry this process's token: each web process renders for its own clients,
# even when the channel layer (Redis) is shared by several processes.
PROCESS = f"{os.getpid()}-{secrets.token_hex(3)}"
# Events that change nothing a list, a header or a timeline shows.
OUTPUT_KINDS = {EventKind.RUN_OUTPUT}
# Events that change what a run page's changes section shows (besides a new attempt).
DIFF_KINDS = {EventKind.RUN_CHANGES, EventKind.RUN_GATE}
# Coalescing: a few changed rows go out at the next poll; a flood of them (a big batch
# where hundreds of runs move at once) goes out at most every BURST_SECONDS, so the
# browser swaps each row once per window instead of once per change.
BURST_ROWS = 50
BURST_SECONDS = 0.5
# A big batch redraws its timeline (one lane per run) less often.
BIG_BATCH_RUNS = 200


@dataclass(frozen=True)
class Event:
    id: int
    batch_id: int
    run_id: int | None
    kind: str


def _render(name: str, context: dict) -> str:
    return render_to_string(name, context)


class Topic:
    """Collects the events it wants; renders an update when one is due."""

    interval = 0.0  # seconds between two updates of one topic, at least

    def __init__(self, name: str):
        self.name = f"live.{PROCESS}.{name}"
        self.last_sent = 0.0
        self.pending = False

    def wants(self, event: Event) -> bool:
        raise NotImplementedError

    def collect(self, event: Event) -> None:
        self.pending = True

    def due(self, now: float) -> bool:
        return self.pending and now - self.last_sent >= self.interval

    def take(self, now: float) -> list[str]:
        """Render the update (in a worker thread) and forget what it covered."""
        self.last_sent = now
        self.pending = False
        return self.update()

    def update(self) -> list[str]:
        return self.snapshot()

    def snapshot(self) -> list[str]:
        raise NotImplementedError


class ListTopic(Topic):
    """The batches list, as shown with one set of filters and one page."""

    interval = 0.5

    def __init__(self, filters: queries.ListFilters):
        key = hashlib.sha1(filters.querystring(page=filters.page).encode()).hexdigest()[:12]
        super().__init__(f"list.{key}")
        self.filters = filters

    def wants(self, event: Event) -> bool:
        return event.kind not in OUTPUT_KINDS

    def snapshot(self) -> list[str]:
        context = queries.list_context(self.filters)
        return [_render("dashboard/batch_list.html#batch-table", context)]


class BatchTopic(Topic):
    """A batch page: header and actions, the rows of runs that changed, the timeline."""

    def __init__(self, batch_id: int, may: permissions.May | None = None):
        # Readers with the same rights share fragments: the buttons are those they may use.
        self.may = may if may is not None else permissions.page_may(None)
        super().__init__(f"batch.{batch_id}.{self.may.key}")
        self.batch_id = batch_id
        self.runs: set[int] = set()
        self.header = False
        self.timeline_pending = False
        self.timeline_sent = 0.0
        size = AgentRun.objects.filter(batch_id=batch_id).count()
        self.timeline_interval = 5.0 if size > BIG_BATCH_RUNS else 1.0
        self.merge = False  # the merge section (merge.* events)

    def wants(self, event: Event) -> bool:
        return event.batch_id == self.batch_id

    def collect(self, event: Event) -> None:
        self.pending = True
        if event.run_id:
            self.runs.add(event.run_id)
        if event.kind not in OUTPUT_KINDS:
            self.header = self.timeline_pending = True
        if event.kind in MERGE_EVENTS:
            self.merge = True

    def due(self, now: float) -> bool:
        window = BURST_SECONDS if len(self.runs) > BURST_ROWS else 0.0
        rows_due = (self.runs or self.header) and now - self.last_sent >= window
        timeline_due = self.timeline_pending and now - self.timeline_sent >= self.timeline_interval
        return bool(rows_due or timeline_due)

    def take(self, now: float) -> list[str]:
        batch = Batch.objects.get(id=self.batch_id)
        blocks, rows = [], ""
        if self.header or self.runs:
            if self.header:
                blocks.append(
                    _render("dashboard/batch.html#header", {**queries.batch_header_context(batch), "may": self.may})
                )
            rows = "".join(
                _render("dashboard/batch.html#run-row", {"run": run}) for run in queries.grid_runs(batch.id, self.runs)
            )
            if self.merge:
                blocks.append(merging.render_section(batch, self.may))
                self.merge = False
            self.runs, self.header = set(), False
            self.last_sent = now
        timeline_due = now - self.timeline_sent >= self.timeline_interval or batch.status != "running"
        if self.timeline_pending and timeline_due:
            blocks.append(_render("dashboard/batch.html#timeline", {"timeline": queries.timeline(batch)}))
            blocks.append(_render("dashboard/_graph.html", graph.graph_context(batch)))  # node states
            self.timeline_pending, self.timeline_sent = False, now
        self.pending = bool(self.runs or self.header or self.timeline_pending)
        return [m for m in ("".join(blocks), rows) if m]

    def snapshot(self) -> list[str]:
        batch = Batch.objects.get(id=self.batch_id)
        context = {**queries.batch_context(batch), "may": self.may}
        context["timeline"] = queries.timeline(batch)  # whole: a big batch's page waits for it
        blocks = "".join(_render(f"dashboard/batch.html#{name}", context) for name in ("header", "timeline"))
        blocks += _render("dashboard/_graph.html", context)  # the dependency graph
        return [blocks + merging.render_section(batch, self.may), _render("dashboard/batch.html#runs", context)]


class RunTopic(Topic):
    """A run page: status and attempts on state changes, the output tail as it grows."""

    def __init__(self, run: AgentRun, may: permissions.May | None = None):
        self.may = may if may is not None else permissions.page_may(None)
        super().__init__(f"run.{run.id}.{self.may.key}")
        self.run_id = run.id
        self.batch_id = run.batch_id
        self.state = False
        self.output = False
        self.diff = False
        self.attempt_shown: int | None = run.attempt

    def wants(self, event: Event) -> bool:
        if event.run_id == self.run_id:
            return True
        return event.run_id is None and event.batch_id == self.batch_id

    def collect(self, event: Event) -> None:
        self.pending = True
        if event.kind in OUTPUT_KINDS:
            self.output = True
        else:
            self.state = True
        if event.kind in DIFF_KINDS:
            self.diff = True

    def update(self) -> list[str]:
        run = AgentRun.objects.select_related("batch", "agent_type").get(id=self.run_id)
        context = {**queries.run_context(run), "may": self.may}
        parts = []
        if self.state:
            parts += [_render(f"dashboard/run.html#{name}", context) for name in ("run-header", "attempts")]
        if run.attempt != self.attempt_shown:
            parts.append(_render("dashboard/run.html#output", context))
        elif self.state or self.output:
            parts.append(_render("dashboard/run.html#tail", context))
        if self.diff or run.attempt != self.attempt_shown:
            # The current attempt's changes, unified: what a reload shows.
            parts.append(_render("dashboard/run.html#diff", diffs.diff_context(run)))
        self.state = self.output = self.diff = False
        self.attempt_shown = run.attempt
        return ["".join(parts)] if parts else []

    def snapshot(self) -> list[str]:
        run = AgentRun.objects.select_related("batch", "agent_type").get(id=self.run_id)
        context = {**queries.run_context(run), "may": self.may}
        names = ("run-header", "attempts", "output")
        html = "".join(_render(f"dashboard/run.html#{name}", context) for name in names)
        return [html + _render("dashboard/run.html#diff", diffs.diff_context(run))]


class CompareTopic(Topic):
    """A parallel batch beside its sequential re-run."""

    interval = 1.0

    def __init__(self, parallel_id: int, sequential_id: int | None, may: permissions.May | None = None):
        self.may = may if may is not None else permissions.page_may(None)
        super().__init__(f"compare.{parallel_id}.{sequential_id or 0}.{self.may.key}")
        self.ids = {parallel_id, sequential_id} - {None}
        self.parallel_id = parallel_id

    def wants(self, event: Event) -> bool:
        # A new sequential re-run of this batch appears through its launch event too.
        return event.kind not in OUTPUT_KINDS and (event.batch_id in self.ids or event.kind == EventKind.BATCH_LAUNCHED)

    def snapshot(self) -> list[str]:
        parallel, sequential = queries.compare_pair(Batch.objects.get(id=self.parallel_id))
        self.ids = {parallel.id} | ({sequential.id} if sequential else set())
        context = {**queries.compare_context(parallel, sequential), "may": self.may}
        return [_render("dashboard/compare.html#comparison", context)]


class SiteTopic(Topic):
    """What the header of every page shows: the number of open escalations."""

    def __init__(self):
        super().__init__("site")

    def wants(self, event: Event) -> bool:
        return event.kind in ESCALATION_EVENTS

    def snapshot(self) -> list[str]:
        return [_render("base.html#escalation-badge", fanin_queries.badge_context())]


class ResultTopic(Topic):
    """A batch's result page: its header (status, verdict, review state) and the review record.

    The findings table is not pushed: each reader has it sorted and filtered their own way.
    """

    interval = 0.5

    def __init__(self, batch_id: int):
        super().__init__(f"result.{batch_id}")
        self.batch_id = batch_id

    def wants(self, event: Event) -> bool:
        return event.batch_id == self.batch_id and event.kind in FANIN_EVENTS

    def snapshot(self) -> list[str]:
        batch = Batch.objects.get(id=self.batch_id)
        header = _render("dashboard/result.html#result-header", fanin_queries.result_header_context(batch))
        record = _render("dashboard/result.html#review-record", fanin_queries.review_context(batch))
        return [header + record]


class EscalationsTopic(Topic):
    """The escalations queue with one filter and one page.

    Cards change one by one (someone assigns or resolves one, its run moves), so only the
    changed cards are sent: a teammate typing a reason in another card keeps their text.
    Escalations that newly match the filter are put at the top of the first page.
    """

    interval = 0.3

    def __init__(self, filters: fanin_queries.QueueFilters, user_id: int | None, may: permissions.May | None = None):
        who = f".{user_id}" if filters.show == "mine" else ""
        self.may = may if may is not None else permissions.page_may(None)
        super().__init__(f"escalations.{filters.show}{who}.{filters.batch or 0}.{filters.page}.{self.may.key}")
        self.filters = filters
        self.user_id = user_id
        self.shown: dict[int, tuple[int, int | None]] = {}  # escalation id -> (batch id, run id)
        self.runs: set[int] = set()
        self.changed: set[int] = set()
        self.queue_changed = False

    def _show(self, escalations) -> None:
        # New objects, not updates in place: the relay reads them from another thread.
        self.shown = {**self.shown, **{e.id: (e.batch_id, e.run_id) for e in escalations}}
        self.runs = {run_id for _, run_id in self.shown.values() if run_id}

    def wants(self, event: Event) -> bool:
        return event.kind in ESCALATION_EVENTS or event.run_id in self.runs

    def collect(self, event: Event) -> None:
        self.pending = True
        if event.kind in ESCALATION_EVENTS:
            self.queue_changed = True
        for escalation_id, (batch_id, run_id) in self.shown.items():
            if run_id == event.run_id and (run_id is not None or batch_id == event.batch_id):
                self.changed.add(escalation_id)

    def update(self) -> list[str]:
        blocks = []
        if self.queue_changed:
            blocks.append(_render("dashboard/escalations.html#queue-tabs", fanin_queries.counts_context(self.filters)))
            if self.filters.page == 1:
                size = settings.DASHBOARD["PAGE_SIZE"]
                ids = fanin_queries.queue(self.filters, self.user_id).values_list("id", flat=True)[:size]
                new = [i for i in ids if i not in self.shown]
                if new:
                    cards = fanin_queries.cards(new)
                    self._show(cards)
                    context = {"escalations": cards, "teammates": fanin_queries.teammates(), "may": self.may}
                    blocks.append(_render("dashboard/escalations.html#new-cards", context))
        if self.changed:
            teammates = fanin_queries.teammates()
            for e in fanin_queries.cards(sorted(self.changed)):
                context = {"e": e, "teammates": teammates, "may": self.may}
                blocks.append(_render("dashboard/escalations.html#escalation-card", context))
        self.changed, self.queue_changed = set(), False
        return ["".join(blocks)] if blocks else []

    def snapshot(self) -> list[str]:
        context = {**fanin_queries.queue_context(self.filters, self.user_id), "may": self.may}
        self.shown = {}
        self._show(context["escalations"])
        return [_render("dashboard/escalations.html#queue", context)]


def topic_for(kind: str, kwargs: dict, query: dict, user=None) -> Topic | None:
    """The topic a websocket URL asks for, or None if what it names does not exist."""
    if kind == "site":
        return SiteTopic()
    if kind == "escalations":
        filters = fanin_queries.QueueFilters.from_query(query)
        return EscalationsTopic(filters, user.id if user else None, permissions.page_may(user))
    if kind == "result":
        return ResultTopic(kwargs["batch_id"]) if Batch.objects.filter(id=kwargs["batch_id"]).exists() else None
    if kind == "list":
        return ListTopic(queries.ListFilters.from_query(query))
    if kind == "batch":
        batch = Batch.objects.filter(id=kwargs["batch_id"]).first()
        return BatchTopic(batch.id, permissions.page_may(user, batch)) if batch else None
    if kind == "run":
        run = AgentRun.objects.filter(id=kwargs["run_id"]).first()
        return RunTopic(run, permissions.page_may(user, run.batch)) if run else None
    if kind == "compare":
        batch = Batch.objects.filter(id=kwargs["batch_id"]).first()
        if batch is None:
            return None
        parallel, sequential = queries.compare_pair(batch)
        return CompareTopic(parallel.id, sequential.id if sequential else None, permissions.page_may(user, batch))
    return None
