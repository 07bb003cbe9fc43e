"""Reads that shape a batch for people: the summary the CLI, the API and JSON output share."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from datetime import date, timedelta
from pathlib import Path

from django.conf import settings
from django.core.cache import cache

from spawner import spec
from spawner.core import aggregation, changes, logview, masking, planning, pricing
from spawner.core import budget as budget_rules
from spawner.core import graph as graph_layout
from spawner.core import merge_queue as merge_rules
from spawner.engine import budgets, fanin, housekeeping, logstore, merging, redaction, wake
from spawner.models import AgentRun, Batch, Escalation, MergeStep, RunAttempt, Workspace
from spawner.states import RUN_FAILED, RUN_TERMINAL, RunStatus


def _aggregation_data(batch: Batch) -> dict | None:
    from spawner.models import Aggregation

    agg = Aggregation.objects.filter(batch=batch).first()
    return agg.data if agg else None


def batch_summary(batch: Batch) -> dict:
    """Everything about a batch's outcome; partial failures are listed, never raised."""
    batch.refresh_from_db()
    runs = list(batch.runs.select_related("agent_type").order_by("order"))
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    return {
        "batch": batch.id,
        "name": batch.name,
        "mode": batch.mode,
        "status": batch.status,
        "max_parallel": batch.max_parallel,
        "counts": counts,
        "timings": batch_summary_timings(batch),
        "aggregation": _aggregation_data(batch),
        "open_escalations": batch.escalations.filter(state=Escalation.State.OPEN).count(),
        "cost": batch_cost(batch),
        "succeeded": [r.key for r in runs if r.status == RunStatus.SUCCEEDED],
        "failed": [r.key for r in runs if r.status in RUN_FAILED],
        "runs": [
            {
                "key": r.key,
                "agent_type": r.agent_type.name,
                "priority": f"P{r.priority}",
                "wave": r.wave,
                "status": r.status,
                "attempts": r.attempt,
                "exit_code": r.exit_code,
                "duration_seconds": r.duration_seconds,
                "error": r.error,
                "result": r.result,
                "result_error": r.result_error,
                "output_tail": r.output_tail[-2000:],
                "tokens": pricing.tokens_of(r.usage) if r.usage else None,
                "cost_usd": r.cost_usd,
                "cost_note": (r.usage or {}).get("cost_note", "") if r.cost_usd is None else "",
                "usage": r.usage,
                "changes": r.changes,
            }
            for r in runs
        ],
    }


def api_url(name: str, pk: int) -> str:
    """The REST API's address of this object ('' in a project that does not mount the API)."""
    from django.urls import NoReverseMatch, reverse

    try:
        return reverse(f"api-1:{name}", args=[pk])
    except NoReverseMatch:
        return ""


def batch_record(batch: Batch) -> dict:
    """A batch as the REST API's `GET /api/batches/{id}` and the Python API's BatchDetail give it:
    its summary, owner and times, each run with its id and API address (one builder for both)."""
    summary = batch_summary(batch)
    run_ids = dict(AgentRun.objects.filter(batch_id=batch.id).values_list("key", "id"))
    runs = [{**r, "id": run_ids[r["key"]], "url": api_url("run", run_ids[r["key"]])} for r in summary["runs"]]
    return {
        **summary,
        "id": batch.id,
        "owner": batch.owner.get_username() if batch.owner_id else None,
        "cancel_requested": batch.cancel_requested,
        "launched_at": batch.launched_at,
        "finished_at": batch.finished_at,
        "sequential_of": batch.sequential_of_id,
        "runs": runs,
        "url": api_url("batch", batch.id),
    }


def batch_summary_timings(batch: Batch) -> dict:
    """A batch's figures for the summary, the API and the CLI. The definitions of spawner.core.timings:
    wall is busy time (idle waits for a person's retry left out); `speedup` is the batch's parallelism
    (work / wall), an estimate, kept under its old name; the measured speedup is the comparison with a
    sequential re-run (`measured_comparison`)."""
    t = batch_timings(batch)
    return {
        "wall_seconds": batch.wall_seconds,
        "since_launch_seconds": t["since_launch"],
        "idle_seconds": t["idle"],
        "sum_seconds": batch.sum_seconds,
        "critical_path_seconds": batch.critical_path_seconds,
        "speedup": batch.speedup,
        "parallelism": batch.speedup,
        "efficiency": batch.efficiency,
    }


def batches_progress(batch_ids) -> dict[int, dict[str, int]]:
    """Run counts by status for each of these batches, in one grouped query."""
    from django.db.models import Count

    from spawner.models import AgentRun

    progress: dict[int, dict[str, int]] = {batch_id: {} for batch_id in batch_ids}
    rows = (
        AgentRun.objects.filter(batch_id__in=list(progress))
        .order_by()
        .values_list("batch_id", "status")
        .annotate(n=Count("id"))
    )
    for batch_id, status, n in rows:
        progress[batch_id][status] = n
    return progress


def review_summary(batch: Batch):
    """Who approved, how many approvals count (SPAWNER REVIEW_APPROVALS, REVIEW_OWNER_COUNTS), the state."""
    return fanin.review_summary(batch)


def review_state(batch: Batch) -> str:
    """approved, changes_requested or pending: each reviewer's latest decision counts."""
    return review_summary(batch).state


def open_escalations_count() -> int:
    return Escalation.objects.filter(state=Escalation.State.OPEN).count()


# --- logs: what people see of an agent's output is masked (its secrets become ***) -----------------


def log_secrets(attempt) -> list[str]:
    """The values to mask in this attempt's log (read from this server's environment, never stored)."""
    return redaction.secret_values(attempt.run.agent_type)


def log_open(attempt, suffix: str = ".log") -> logstore.LogSource | None:
    """A reader over one of the attempt's files (`.log`, `.diff`, ...) wherever it is kept now: in
    place on one machine, the shared storage once the attempt ended, the live rows while it runs.
    None when no store holds it. The caller closes it (or reads through `log_opened`)."""
    return logstore.open_log(attempt, suffix)


log_opened = logstore.opened


def log_size(attempt, suffix: str = ".log") -> int | None:
    """The size of one of the attempt's files, or None when no store holds it."""
    with logstore.opened(attempt, suffix) as source:
        return source.size if source is not None else None


def log_range(source: logstore.LogSource, start: int, end: int, secrets: list[str]) -> bytes:
    """Bytes [start, end) of an opened log, masked (a secret crossing either edge too)."""
    return redaction.read_range_from(source.read, start, min(end, source.size), secrets)


def log_masker(secrets: list[str]) -> masking.StreamMasker:
    """A masker for a log streamed chunk by chunk: feed() each chunk, finish() at the end."""
    return masking.StreamMasker(secrets)


# --- the log viewer: an attempt's log as numbered lines, paged, searched, stderr marked -----------
# The line index of each log this process has looked at is kept (a few numbers per thousand lines)
# and extended as the log grows; a log rewritten in place (masked at the end) or moved to the
# shared storage is indexed again.

_LOG_INDEXES: OrderedDict[str, tuple[object, logview.LineIndex]] = OrderedDict()
_LOG_INDEXES_KEPT = 64
_LOG_INDEX_LOCK = threading.Lock()


log_page_count = logview.page_count
log_page_of_line = logview.page_of_line
log_page_span = logview.page_span
log_tail_span = logview.tail_span
LogQueryError = logview.BadQuery


def log_parse_number(value: str | None, name: str) -> int | None:
    """A page or line number from a query string (LogQueryError naming the field when it is not one)."""
    return logview.parse_positive(value, name)


def log_clean_query(value: str | None) -> str:
    """The plain text to search a log for (LogQueryError when it is too long)."""
    return logview.clean_query(value)


def _index(source: logstore.LogSource) -> logview.LineIndex | None:
    with _LOG_INDEX_LOCK:
        kept = _LOG_INDEXES.get(source.key)
        index = kept[1] if kept and kept[0] == source.version and kept[1].size <= source.size else None
        if index is None:
            index = logview.LineIndex()
        if index.size < source.size:
            try:
                for piece in logview.line_chunks(source.read, source.size, start=index.size):
                    if not piece.endswith(b"\n") and len(piece) < 4 * logview.SEARCH_CHUNK_BYTES:
                        break  # the last line is still being written: index it once it ends
                    index.feed(piece)
            except OSError:
                return None
        index.file_size = source.size
        _LOG_INDEXES[source.key] = (source.version, index)
        _LOG_INDEXES.move_to_end(source.key)
        while len(_LOG_INDEXES) > _LOG_INDEXES_KEPT:
            _LOG_INDEXES.popitem(last=False)
        return index


def log_index(attempt) -> logview.LineIndex | None:
    """The attempt's line index, up to date with its log as it is now; None when no store holds it."""
    with logstore.opened(attempt) as source:
        return _index(source) if source is not None else None


def log_available(attempt) -> bool:
    """Whether this server can read the attempt's full log (wherever it is kept)."""
    return log_size(attempt) is not None


def _line_masker(secrets: list[str]):
    bsecrets = masking.as_bytes(secrets)
    return (lambda raw: masking.mask(raw, bsecrets)) if bsecrets else None


def log_lines(attempt, first: int, last: int) -> list[logview.Line]:
    """Lines first..last of the attempt's log, masked, stderr marked (empty when no store holds it)."""
    with logstore.opened(attempt) as source:
        index = _index(source) if source is not None else None
        if index is None:
            return []
        try:
            lines = logview.read_lines(source.read, index, first, last, mask=_line_masker(log_secrets(attempt)))
        except OSError:
            return []
    logview.mark_stderr(lines, log_stderr_ranges(attempt))
    return lines


def log_stderr_ranges(attempt) -> list[tuple[int, int]]:
    """The byte ranges of the log that the agent wrote to stderr (the runner's sidecar)."""
    with logstore.opened(attempt, ".stderr") as source:
        if source is None:
            return []
        try:
            raw = source.read(0, min(source.size, logview.STDERR_INDEX_MAX_BYTES))
        except OSError:
            return []
    return logview.parse_ranges(raw.decode("ascii", "replace"))


def log_search(attempt, query: str) -> logview.SearchResult | None:
    """Lines of the attempt's log holding `query` (plain text, masked log); None when no store holds it."""
    mask = _line_masker(log_secrets(attempt))
    with logstore.opened(attempt) as source:
        if source is None:
            return None
        try:
            chunks = logview.line_chunks(source.read, source.size)
            return logview.search((mask(c) for c in chunks) if mask else chunks, query)
        except OSError:
            return None


# --- what the pages need to know of specs, plans and results --------------------------------------
# The ways in depend on services and selectors alone; these name the engine's types and limits for them.

AgentInfo = spec.AgentInfo
BatchSpec = spec.BatchSpec
Plan = planning.Plan
SEVERITIES = aggregation.SEVERITIES
SPEC_LIMITS = {
    "spec_bytes": spec.MAX_SPEC_BYTES,
    "text_chars": spec.MAX_TEXT_CHARS,
    "files_per_task": spec.MAX_FILES_PER_TASK,
}


def result_markdown(data: dict, *, title: str) -> str:
    """An aggregation as Markdown (the caller makes the values safe to render)."""
    return aggregation.to_markdown(data, title=title)


# --- the merge queue: what the batch page shows (no repository needed: all from the database and the
# files written beside the logs) -------------------------------------------------------------------

MERGE_DIFF_MAX_BYTES = 2_000_000


def _merge_workspace(batch: Batch):
    return merging.of(batch.id)


def merge_queue(batch: Batch) -> dict | None:
    """The batch's merge queue, or None when it has none (no worktrees, or merge: none)."""
    ws = _merge_workspace(batch)
    if ws is None:
        return None
    open_escalations = dict(
        Escalation.objects.filter(
            batch=batch, state=Escalation.State.OPEN, kind__in=[Escalation.Kind.CONFLICT, Escalation.Kind.MERGE_GATE]
        ).values_list("run_id", "id")
    )
    steps = []
    counts: dict[str, int] = {}
    for step in MergeStep.objects.filter(batch=batch).select_related("run", "acted_by").order_by("position"):
        counts[step.state] = counts.get(step.state, 0) + 1
        conflict = step.conflict or {}
        steps.append(
            {
                "id": step.id,
                "position": step.position,
                "run_id": step.run_id,
                "key": step.run.key,
                "state": step.state,
                "merge_commit": step.merge_commit,
                "merged_head": step.merged_head,
                "revert_commit": step.revert_commit,
                "conflict_files": conflict.get("files", []),
                "conflict_kinds": conflict.get("kinds", {}),
                "hunks": conflict.get("hunks", {}),
                "gate_output": conflict.get("gate", ""),
                "resolution": step.resolution,
                "worktree": (step.resolution or {}).get("by_hand", "") if step.state == "resolving" else "",
                "error": step.error,
                "escalation": open_escalations.get(step.run_id),
                "acted_by": step.acted_by.get_username() if step.acted_by else None,
                "merged_at": step.merged_at,
                "updated_at": step.updated_at,
                "actions": list(merge_rules.actions_for(step.state)),
            }
        )
    return {
        "batch": batch.id,
        "mode": ws.merge_mode,
        "gate": bool(ws.gate),
        "repo": ws.repo,
        "checkpoint": ws.checkpoint,
        "integration_branch": changes.integration_branch(batch.id),
        "integration_head": ws.integration_head,
        "counts": counts,
        "steps": steps,
    }


def merge_conflict_matrix(batch: Batch) -> dict | None:
    """The pre-check: {"runs": [keys in queue order], "pairs": [{"a", "b", "files"}] (only pairs that
    conflict), "integration": {key: files} (runs that conflict with the integration head),
    "checked_pairs": n, "computed_at": datetime}; None before it ran."""
    ws = _merge_workspace(batch)
    if ws is None or ws.conflict_matrix is None:
        return None
    data = ws.conflict_matrix
    return {
        "runs": data.get("runs", []),
        "pairs": data.get("pairs", []),
        "integration": data.get("integration", {}),
        "checked_pairs": data.get("checked_pairs", 0),
        "computed_at": ws.matrix_at,
    }


def integration_diff(batch: Batch, *, max_bytes: int = MERGE_DIFF_MAX_BYTES) -> dict | None:
    """The integration branch against the checkpoint: {"branch", "head", "summary": {files: [{path,
    added, removed, outside_scope}], added, removed, changed, ...}, "text": unified diff, "truncated"}."""
    ws = _merge_workspace(batch)
    if ws is None:
        return None
    path = merging.integration_diff_path(batch.id)
    text, truncated = "", False
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
        truncated = len(raw) > max_bytes
        text = raw[:max_bytes].decode("utf-8", "replace")
    except FileNotFoundError:
        pass
    return {
        "branch": changes.integration_branch(batch.id),
        "head": ws.integration_head,
        "summary": ws.integration_changes,
        "text": text,
        "truncated": truncated,
    }


def integration_take_commands(batch: Batch) -> list[str]:
    """The commands a person types to take the integration branch (Spawner never merges into their branches)."""
    ws = _merge_workspace(batch)
    if ws is None:
        return []
    return merge_rules.take_commands(ws.repo, changes.integration_branch(batch.id))


# --- best of N: the candidates of a race or a vote side by side (mergeui) -------------------------

CANDIDATE_DIFF_MAX_BYTES = 200_000


def _read_bounded(attempt, suffix: str, max_bytes: int) -> tuple[str, bool]:
    with logstore.opened(attempt, suffix) as source:
        if source is None:
            return "", False
        try:
            raw = source.read(0, min(source.size, max_bytes + 1))
        except OSError:
            return "", False
    return raw[:max_bytes].decode("utf-8", "replace"), len(raw) > max_bytes


def merge_candidates(batch: Batch, *, max_bytes: int = CANDIDATE_DIFF_MAX_BYTES) -> dict | None:
    """Every run of a batch whose coding agents ran in worktrees, side by side: status, whether its gate
    passed (None without a gate), duration, cost and tokens, diff size and diff text, its place in the merge queue, and
    which one the aggregation picked. None without worktrees."""
    from spawner.models import AgentRun, RunAttempt, RunEvent, Workspace

    ws = Workspace.objects.filter(batch_id=batch.id, isolation=Workspace.Isolation.WORKTREE).first()
    if ws is None:
        return None
    runs = list(AgentRun.objects.filter(batch=batch).select_related("agent_type").order_by("order"))
    rows = RunAttempt.objects.filter(run__batch=batch).only("run_id", "number", "status", "log_path")
    attempts = {(a.run_id, a.number): a for a in rows}
    gates: dict[tuple[int, int], int] = {}
    for run_id, attempt, data in RunEvent.objects.filter(batch=batch, kind="run.gate").values_list(
        "run_id", "attempt", "data"
    ):
        gates[(run_id, attempt)] = (data or {}).get("exit_code")
    steps = {s.run_id: s for s in MergeStep.objects.filter(batch=batch)}
    agg = _aggregation_data(batch) or {}
    out = []
    for run in runs:
        attempt = attempts.get((run.id, run.attempt))
        text, truncated = "", False
        if attempt and attempt.log_path:
            attempt.run = run
            text, truncated = _read_bounded(attempt, ".diff", max_bytes)
        code = gates.get((run.id, run.attempt), "none")
        step = steps.get(run.id)
        out.append(
            {
                "id": run.id,
                "key": run.key,
                "agent_type": run.agent_type.name,
                "status": run.status,
                "error": run.error,
                "duration_seconds": run.duration_seconds,
                "gate": None if code == "none" or not ws.gate else code == 0,
                "gate_exit": None if code == "none" else code,
                "changes": run.changes or {},
                "usage": run.usage,
                "cost_usd": run.cost_usd,
                "diff": text,
                "truncated": truncated,
                "step": {"id": step.id, "state": step.state} if step else None,
                "winner": agg.get("winner") == run.key,
            }
        )
    return {
        "batch": batch.id,
        "aggregation": batch.aggregation,
        "gate": bool(ws.gate),
        "merge_mode": ws.merge_mode,
        "winner": agg.get("winner"),
        "verdict": agg.get("verdict"),
        "candidates": out,
    }


# === diffs and workspaces, for the run and batch pages (diff UI) ==================================
# Kept in one block: the merge queue's reads go in a block of their own.


def workspace_of(batch_id: int):
    """The batch's git workspace (repository, checkpoint, merge mode, scope policy, gate), or None."""
    from spawner.models import Workspace

    return Workspace.objects.filter(batch_id=batch_id).first()


def attempt_diff(attempt) -> logstore.LogSource | None:
    """A reader over the attempt's unified diff (kept beside its log), or None; the caller closes it."""
    return logstore.open_log(attempt, ".diff")


def attempt_gate(attempt) -> dict | None:
    """What the gate said of this attempt (`{"exit_code": n}`), or None if it did not run."""
    from spawner.models import RunEvent
    from spawner.states import EventKind

    event = (
        RunEvent.objects.filter(run_id=attempt.run_id, attempt=attempt.number, kind=EventKind.RUN_GATE)
        .order_by("-id")
        .first()
    )
    return event.data if event else None


# === end of diffs and workspaces ==================================================================


WORKSPACE_DISK_CACHE_SECONDS = 30
WORKSPACE_DISK_SECONDS = 2.0  # a live page does not wait longer for `du` on a slow disk


def workspace_disk(batch: Batch) -> int | None:
    """Bytes on disk the batch's worktrees (its runs' and the merge queue's) use now: their files
    plus each one's private git data (its index); the repository's object store is shared and not
    counted. 0 when none is left; None when `du` took longer than WORKSPACE_DISK_SECONDS.
    Measured with `du` (about 10 ms per 10,000 files) and remembered for 30 s, so a live page may
    ask on every redraw."""
    paths = sorted(
        RunAttempt.objects.filter(run__batch_id=batch.id).exclude(worktree="").values_list("worktree", flat=True)
    )
    ws = Workspace.objects.filter(batch_id=batch.id).first()
    if ws is not None and merging.integration_path(ws).is_dir():
        paths.append(str(merging.integration_path(ws)))
    if not paths:
        return 0
    key = f"spawner:workspace-disk:{batch.id}:{hashlib.sha1('|'.join(paths).encode()).hexdigest()[:12]}"
    found = cache.get(key)
    if found is None:
        found = housekeeping.worktrees_disk(paths, timeout=WORKSPACE_DISK_SECONDS)
        found = -1 if found is None else found  # not measured in time: asked again after as long
        cache.set(key, found, WORKSPACE_DISK_CACHE_SECONDS)
    return None if found < 0 else found


def example_spec(name: str) -> dict | None:
    """An example batch from `examples/<name>.yaml`, for a starting point on the new-batch page. Its
    relative paths start from the project root (see `services.spec_base_dir`); its `cwd` is made
    relative to the browser's base directory (SPAWNER_WORKDIR). None when there is no such example
    or it would leave the base directory."""
    import yaml

    examples = settings.BASE_DIR / "examples"
    path = examples / f"{name}.yaml"
    if "/" in name or not path.is_file():
        return None
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        return None
    where = (settings.BASE_DIR / str(data.get("cwd") or ".")).resolve()
    base = Path(settings.SPAWNER_WORKDIR).resolve()
    if not where.is_relative_to(base):
        return None
    data["cwd"] = os.path.relpath(where, base)
    return data


# --- cost: usage, estimates and budgets (issue 10; written by spawner.engine.usage) ---------------


usd = budget_rules.usd  # $0.0123 below a dollar, $12.34 above


def usage_view(usage: dict | None, cost_usd: float | None) -> dict | None:
    """A run's or attempt's usage as people read it; None when nothing was reported (a plain tool)."""
    if not usage:
        return None
    known = cost_usd if cost_usd is not None else usage.get("cost_usd")
    return {
        "tokens": pricing.tokens_of(usage),
        "input_tokens": usage.get("input_tokens") or 0,
        "output_tokens": usage.get("output_tokens") or 0,
        "cache_read_tokens": usage.get("cache_read_tokens") or 0,
        "cache_write_tokens": usage.get("cache_write_tokens") or 0,
        "cost_usd": known,
        "cost_label": budget_rules.usd(known) if known is not None else "cost unknown",
        "cost_note": "" if known is not None else usage.get("cost_note") or "the agent reported no cost",
        "models": list(usage.get("models") or []),
        "turns": usage.get("turns"),
        "source": usage.get("source") or "",
    }


def batch_cost(batch: Batch) -> dict:
    """Spent so far (known costs), runs whose cost is unknown, tokens, and the budget's bar."""
    rows = list(batch.runs.exclude(usage__isnull=True).values_list("usage", "cost_usd"))
    spent = sum(c for _, c in rows if c is not None)
    unknown = sum(1 for _, c in rows if c is None)
    budget = batch.budget_usd
    return {
        "spent_usd": spent,
        "spent_label": budget_rules.usd(spent),
        "tokens": sum(pricing.tokens_of(u) for u, _ in rows),
        "runs_with_usage": len(rows),
        "unknown_runs": unknown,
        "budget_usd": budget,
        "budget_label": budget_rules.usd(budget) if budget is not None else "",
        "on_budget": batch.on_budget or "skip_pending",
        "percent": min(100.0, 100.0 * spent / budget) if budget else None,
        "over": budget is not None and spent > budget + budget_rules.EPSILON,
    }


def confirm_cost_usd() -> float | None:
    """Above this estimated cost the new-batch page asks for a confirmation (SPAWNER_CONFIRM_COST_USD)."""
    return settings.SPAWNER.get("CONFIRM_COST_USD")


def plan_cost(batch_spec: spec.BatchSpec) -> dict:
    """The spec's estimated cost for the plan, and whether launching it needs a confirmation."""
    found = budgets.plan_cost(batch_spec.tasks, budget_usd=batch_spec.budget_usd)
    threshold = confirm_cost_usd()
    found["label"] = budget_rules.usd(found["estimate_usd"])
    found["confirm_above_usd"] = threshold
    found["confirm_reason"] = budget_rules.confirm_reason(
        estimate=found["estimate_usd"],
        threshold=threshold,
        unknown_paid=len(found["unknown_paid"]),
        unknown_limit=settings.SPAWNER.get("CONFIRM_UNKNOWN_RUNS"),  # 0 or less: off
    )
    found["needs_confirm"] = bool(found["confirm_reason"])
    return found


# --- Stats: which agent is best (the /stats/ page and /stats.json) --------------------------------
# Bounded: at most STATS_ROW_CAP finished runs (the most recent) in the period; gate results and
# rate-limit waits come from two grouped queries over those runs. The math is spawner.core.stats.

STATS_ROW_CAP = 50_000


def _stats_group(row: dict, group_by: str) -> str:
    if group_by == "role":
        return row["role"] or "(no role)"
    if group_by == "model":
        models = (row["usage"] or {}).get("models") if isinstance(row["usage"], dict) else None
        if isinstance(models, list) and models:
            return ", ".join(sorted(str(m) for m in models))
        return row["agent_type__model"] or f"({row['agent_type__name']}: no model)"
    return row["agent_type__name"]


def agent_stats(*, group_by: str = "agent_type", period: str | None = "30", sort: str = "-runs", now=None) -> dict:
    """Figures per agent type, model or role over the last 7/30/90 days or all time; the same dict
    feeds the page and the JSON."""
    from django.db.models import Count
    from django.utils import timezone

    from spawner.core import stats as stats_rules
    from spawner.models import AgentRun, RunEvent
    from spawner.states import AttemptStatus, EventKind

    now = now or timezone.now()
    group_by = group_by if group_by in stats_rules.GROUPS else "agent_type"
    period, days = stats_rules.period_days(period)
    runs = AgentRun.objects.filter(finished_at__isnull=False)
    if days is not None:
        runs = runs.filter(finished_at__gte=now - timedelta(days=days))
    fields = (
        "id",
        "agent_type__name",
        "agent_type__model",
        "role",
        "status",
        "duration_seconds",
        "attempt",
        "finished_at",
        "cost_usd",
        "usage",
        "result",
    )
    raw = list(runs.order_by("-finished_at").values(*fields)[: STATS_ROW_CAP + 1])
    capped = len(raw) > STATS_ROW_CAP
    raw = raw[:STATS_ROW_CAP]
    ids = [r["id"] for r in raw]
    gates: dict[int, int] = {}
    waits: dict[int, int] = {}
    if ids:
        oldest = raw[-1]["finished_at"]
        scope = {"run__finished_at__gte": oldest, "run__finished_at__isnull": False}
        # The last gate of each run decides (a retry may pass what the first attempt failed).
        for event in (
            RunEvent.objects.filter(kind=EventKind.RUN_GATE, **scope).order_by("id").values("run_id", "data")
        ).iterator():
            code = (event["data"] or {}).get("exit_code")
            gates[event["run_id"]] = code if isinstance(code, int) else 1

        for item in (
            RunAttempt.objects.filter(status=AttemptStatus.RATE_LIMITED, **scope)
            .values("run_id")
            .annotate(n=Count("id"))
        ):
            waits[item["run_id"]] = item["n"]
    rows = []
    for r in raw:
        local = timezone.localtime(r["finished_at"])
        rows.append(
            {
                "group": _stats_group(r, group_by),
                "status": r["status"],
                "duration": r["duration_seconds"],
                "cost": r["cost_usd"],
                "tokens": pricing.tokens_of(r["usage"]) if isinstance(r["usage"], dict) else 0,
                "findings": stats_rules.findings_of(r["result"]),
                "attempts": r["attempt"],
                "rate_limited": waits.get(r["id"], 0),
                "gate": gates.get(r["id"]),
                "day": local.date().isoformat(),
            }
        )
    grouped = stats_rules.group_rows(rows)
    groups = stats_rules.sort_groups([stats_rules.summarize(name, items) for name, items in grouped.items()], sort)
    last = timezone.localtime(now).date()
    if days is not None:
        first = last - timedelta(days=days - 1)
    elif rows:
        first = min(date.fromisoformat(r["day"]) for r in rows)
    else:
        first = last
    first = max(first, last - timedelta(days=365))  # a trend of at most a year of days
    for g in groups:
        g["trend"] = stats_rules.trend(grouped[g["group"]], first, last)
    column, desc = stats_rules.sort_key(sort)
    return {
        "group_by": group_by,
        "period": period,
        "sort": f"-{column}" if desc else column,
        "since": (now - timedelta(days=days)).isoformat() if days is not None else None,
        "runs": len(rows),
        "capped": capped,
        "cap": STATS_ROW_CAP,
        "overall": stats_rules.summarize("all", rows) if rows else None,
        "groups": groups,
    }


# --- end of stats ----------------------------------------------------------------------------------


# --- timings: one set of definitions (spawner.core.timings) for every page and the CLI ------------


def batch_timings(batch: Batch, *, now=None, own_pass: bool = False) -> dict:
    """A batch's wall (busy), since launch, idle, work, critical path, parallelism and efficiency, as
    seconds and ratios, with `running` (the figures grow) and what its own pass leaves out.

    An ended batch's figures are those stored at its end (no query), unless `own_pass` asks for the
    like-for-like basis of a comparison (a person's retries left out)."""
    from django.utils import timezone

    from spawner.engine import dispatch
    from spawner.states import BatchStatus

    running = batch.status == BatchStatus.RUNNING
    end = batch.finished_at if not running and batch.finished_at else (now or timezone.now())
    m = dispatch.batch_measure(batch, end=end, own_pass=True) if own_pass else None
    if not running and (m is None or not m.left_out) and batch.wall_seconds is not None:
        # What the batch stored at its end: the same definitions, and what its own page shows.
        since = max(0.0, (end - batch.launched_at).total_seconds())
        wall = batch.wall_seconds
        return {
            "running": False,
            "wall": wall,
            "since_launch": since,
            "idle": max(0.0, since - wall),
            "work": batch.sum_seconds,
            "critical_path": batch.critical_path_seconds,
            "parallelism": batch.speedup,
            "efficiency": batch.efficiency,
            "left_out": 0,
            "left_out_work": 0.0,
        }
    # While it runs the pages show its clock only: the ratios wait for its end.
    m = m or dispatch.batch_measure(batch, end=end, work=not running)
    return {
        "running": running,
        "wall": m.wall,
        "since_launch": m.since_launch,
        "idle": m.idle,
        "work": m.work if not running or own_pass else None,
        "critical_path": m.critical_path if not running or own_pass else None,
        "parallelism": m.parallelism if not running or own_pass else None,
        "efficiency": m.efficiency if not running or own_pass else None,
        "left_out": m.left_out,
        "left_out_work": m.left_out_work,
    }


def measured_speedup(*, sequential_wall: float | None, parallel_wall: float | None) -> float | None:
    """The sequential re-run's wall over the parallel batch's wall (spawner.core.timings.speedup)."""
    from spawner.core import timings

    return timings.speedup(sequential_wall=sequential_wall, parallel_wall=parallel_wall)


def measured_comparison(parallel: Batch, sequential: Batch, *, now=None) -> dict:
    """A parallel batch against its sequential re-run, as the compare page and `spawn --compare` show
    it: each batch's own pass (a person's later retries left out), and one measured speedup, the
    sequential wall over the parallel wall; None while either runs, or when either was cancelled
    (it did not do the same work)."""
    from django.utils import timezone

    from spawner.states import BatchStatus

    now = now or timezone.now()
    own = [batch_timings(b, now=now, own_pass=True) for b in (parallel, sequential)]
    comparable = not any(o["running"] for o in own) and BatchStatus.CANCELLED not in (
        parallel.status,
        sequential.status,
    )
    speedup = measured_speedup(sequential_wall=own[1]["wall"], parallel_wall=own[0]["wall"]) if comparable else None
    return {"own": own, "speedup": speedup, "left_out": own[0]["left_out"] + own[1]["left_out"]}


def run_elapsed(run, *, now=None) -> float | None:
    """A run's duration so far: its ended attempts, plus the running one up to now."""
    from django.utils import timezone

    from spawner.core import timings

    now = now or timezone.now()
    return timings.run_elapsed(
        recorded=run.duration_seconds,
        started=run.started_at.timestamp() if run.started_at else None,
        now=now.timestamp(),
        running=run.status == RunStatus.RUNNING,
    )


# --- the dependency graph and the history of a batch name -------------------------------------------


def _graph_deps(rows) -> dict[str, list[str]]:
    """key -> dependencies among the keys present; none at all if the stored graph had a cycle."""
    deps = {key: list(ds or []) for key, ds in rows}
    deps = {key: [d for d in ds if d in deps and d != key] for key, ds in deps.items()}
    return {key: [] for key in deps} if planning.find_cycle(deps) else deps


GRAPH_ORDER_CACHE_SECONDS = 3600


def batch_graph(batch_id: int):
    """The batch's dependency graph laid out for drawing, and each key's run id (spawner.core.graph)."""
    runs = AgentRun.objects.filter(batch_id=batch_id).order_by("order")
    rows = list(runs.values_list("key", "depends_on", "status", "id"))
    deps = _graph_deps((key, ds) for key, ds, _, _ in rows)
    # A batch's dependencies never change once launched: its order is worked out once.
    cache_key = f"spawner:graph-order:{batch_id}:{len(rows)}"
    order = cache.get(cache_key)
    if order is None or {key for wave in order for key in wave} != deps.keys():
        order = graph_layout.order_waves(deps)
        cache.set(cache_key, order, GRAPH_ORDER_CACHE_SECONDS)
    layout = graph_layout.layout(deps, {key: status for key, _, status, _ in rows}, order=order)
    return layout, {key: run_id for key, _, _, run_id in rows}


def plan_graph(batch_spec: spec.BatchSpec):
    """A spec's dependency graph before launch: every task "planned"."""
    deps = _graph_deps((t.key, t.depends_on) for t in batch_spec.tasks)
    return graph_layout.layout(deps, default_state="planned")


def state_glyphs() -> dict[str, str]:
    """The glyph of each run or attempt state: the pages never tell a state by colour alone."""
    return graph_layout.GLYPHS


HISTORY_PAGE_SIZE = 50


def batch_history(name: str, page: int = 1, per_page: int = HISTORY_PAGE_SIZE) -> dict:
    """The batches of one name, newest first, a page of them, with each task's run as a cell.

    Columns are the task keys over those batches (the newest batch's order first); a cell is
    None where a batch had no such task.
    """
    from django.core.paginator import Paginator

    batches = Batch.objects.filter(name=name).only("id", "name", "status", "launched_at", "wall_seconds")
    batches = batches.order_by("-id")
    shown = Paginator(batches, per_page).get_page(page)
    ids = [b.id for b in shown.object_list]
    runs = AgentRun.objects.filter(batch_id__in=ids).values_list(
        "batch_id", "id", "key", "status", "duration_seconds", "attempt", "order"
    )
    cells: dict[int, dict[str, dict]] = {i: {} for i in ids}
    keys: dict[str, tuple[int, int]] = {}  # key -> (how new its newest batch is, its order there)
    rank = {batch_id: n for n, batch_id in enumerate(ids)}
    for batch_id, run_id, key, status, duration, attempt, order in runs:
        cells[batch_id][key] = {"run_id": run_id, "status": status, "seconds": duration, "attempt": attempt}
        place = (rank[batch_id], order)
        if key not in keys or place < keys[key]:
            keys[key] = place
    columns = sorted(keys, key=keys.__getitem__)
    # Flaky: a task that ended differently in these batches, or needed more than one attempt to end
    # as it did (its first try failed); a run still going counts for nothing yet.
    ended = [[c for i in ids if (c := cells[i].get(key)) and c["status"] in RUN_TERMINAL] for key in columns]
    flaky = {
        key
        for key, done in zip(columns, ended, strict=True)
        if len({c["status"] for c in done}) > 1 or any((c["attempt"] or 0) > 1 for c in done)
    }
    rows = [{"batch": b, "cells": [cells[b.id].get(key) for key in columns]} for b in shown.object_list]
    return {"name": name, "page": shown, "columns": columns, "flaky": flaky, "rows": rows}


# --- the REST API -------------------------------------------------------------------------------


def batches_filtered(*, status: str = "", name: str = "", owner: str = ""):
    """Batches, newest first: `owner` is a user id, a username, or "cli" (launched without a user)."""
    batches = Batch.objects.select_related("owner").defer("spec", "spec_text").order_by("-id")
    if status:
        batches = batches.filter(status=status)
    if name:
        batches = batches.filter(name__icontains=name)
    if owner == "cli":
        batches = batches.filter(owner__isnull=True)
    elif owner.isdigit():
        batches = batches.filter(owner_id=int(owner))
    elif owner:
        batches = batches.filter(owner__username=owner)
    return batches


def api_tokens(user):
    from spawner.models import ApiToken

    return list(ApiToken.objects.filter(user_id=user.id).order_by("revoked_at", "-id"))


def plan_view(batch_spec: spec.BatchSpec, plan: planning.Plan, *, sequential: bool = False) -> dict:
    """A spec's plan as the REST API's `POST /api/batches/plan` and MCP's `plan_batch` answer it."""
    from spawner.states import Mode

    return {
        "name": batch_spec.name,
        "mode": Mode.SEQUENTIAL if sequential else batch_spec.mode,
        "max_parallel": batch_spec.max_parallel,
        "tasks": len(batch_spec.tasks),
        "waves": plan.waves,
        "order": plan.order,
        "critical_path": plan.critical_path,
        "critical_path_seconds": plan.critical_path_seconds,
        "sum_seconds": plan.sum_seconds,
        "estimated_wall_seconds": plan.estimated_wall_seconds,
        "estimated_speedup": plan.estimated_speedup,
        "durations_known": plan.durations_known,
        "checks": [{"name": n, "ok": ok, "detail": d} for n, ok, d in plan.checks],
        "warnings": batch_spec.warnings,
        "cost": plan_cost(batch_spec),
    }


def escalation_queue(*, show: str = "all", batch: int | None = None, user_id: int | None = None):
    """Escalations, open first, newest first within each group: `show` is all, open or mine."""
    from django.db.models import Case, IntegerField, Value, When

    found = Escalation.objects.all()
    if show == "open":
        found = found.filter(state=Escalation.State.OPEN)
    elif show == "mine":
        found = found.filter(assignee_id=user_id)
    if batch:
        found = found.filter(batch_id=batch)
    first = Case(When(state=Escalation.State.OPEN, then=Value(0)), default=Value(1), output_field=IntegerField())
    return found.annotate(closed=first).order_by("closed", "-id")


def escalation_view(e: Escalation) -> dict:
    """An escalation as the REST API and MCP's `list_escalations` give it."""

    def who(user) -> str | None:
        return user.get_username() if user is not None else None

    return {
        "id": e.id,
        "batch": e.batch_id,
        "run": e.run_id,
        "run_key": e.run.key if e.run else None,
        "kind": e.kind,
        "reason": e.reason,
        "state": e.state,
        "assignee": who(e.assignee),
        "resolution": e.resolution,
        "resolution_note": e.resolution_note,
        "resolved_by": who(e.resolved_by),
        "created_at": e.created_at,
        "resolved_at": e.resolved_at,
    }


def aggregation_of(batch: Batch) -> dict | None:
    """The batch's combined result, as the result page and `spawn --json` show it; None before it ends."""
    return _aggregation_data(batch)


def schedule_outcomes(links) -> dict[int, dict]:
    """Each template schedule's last task as django-q2 kept it: done, or why it failed (its first
    words, never the traceback)."""
    from django_q.models import Task

    task_of = {link.id: link.schedule.task for link in links if link.schedule.task}
    tasks = {t.id: t for t in Task.objects.filter(id__in=set(task_of.values()))}
    found = {}
    for link_id, task_id in task_of.items():
        if (task := tasks.get(task_id)) is None:
            continue
        why = "" if task.success else str(task.result or "").split(" : Traceback", 1)[0][:300]
        found[link_id] = {"ok": task.success, "why": why, "at": task.stopped}
    return found


def webhook_deliveries(*, state: str = "", limit: int = 200):
    """The latest webhook calls, newest first, with their batch's name, to whom a personal one went
    and who last redelivered it (the admins' delivery log)."""
    from spawner.models import WebhookDelivery

    rows = WebhookDelivery.objects.select_related("batch", "redelivered_by", "recipient").only(
        "id",
        "redelivered_at",
        "redelivered_by__username",
        "recipient__username",
        "event",
        "url",
        "state",
        "attempts",
        "next_attempt_at",
        "last_status",
        "last_error",
        "created_at",
        "delivered_at",
        "batch__id",
        "batch__name",
    )
    if state:
        rows = rows.filter(state=state)
    return list(rows.order_by("-id")[:limit])


def event_wakeups() -> wake.AsyncListener:
    """For the relay (in its event loop): `await .wait(timeout)` returns early when events are committed;
    `.close()` when done. Without wake-ups (SPAWNER_WAKE=off, or none can be received) it only times out."""
    return wake.AsyncListener(wake.EVENTS)


# --- the API's event stream ----------------------------------------------------------------------


def newest_event_id() -> int:
    """The newest id in the event log (0: empty)."""
    from django.db.models import Max

    from spawner.models import RunEvent

    return RunEvent.objects.aggregate(newest=Max("id"))["newest"] or 0


def batches_with_events_after(after: int, limit: int = 5000) -> tuple[set[int], int]:
    """The batches that have events after id `after` (looking at `limit` events at most), and the
    newest id looked at (`after` when none)."""
    from spawner.models import RunEvent

    rows = list(RunEvent.objects.filter(id__gt=after).order_by("id").values_list("id", "batch_id")[:limit])
    return {batch_id for _, batch_id in rows}, (rows[-1][0] if rows else after)


def last_event_id(batch_id: int) -> int:
    """The id of the batch's latest event (0: none yet)."""
    from spawner.models import RunEvent

    return RunEvent.objects.filter(batch_id=batch_id).order_by("-id").values_list("id", flat=True).first() or 0


def events_after(batch_id: int, after: int, limit: int = 500) -> list[dict]:
    """The batch's events after `after`, oldest first (at most `limit`): what each says, never its data."""
    from spawner.models import RunEvent

    rows = (
        RunEvent.objects.filter(batch_id=batch_id, id__gt=after)
        .order_by("id")
        .values_list("id", "kind", "status", "run_id", "run__key", "attempt", "created_at")[:limit]
    )
    return [
        {"id": i, "kind": k, "status": s, "run": r, "key": key, "attempt": a, "at": at.isoformat()}
        for i, k, s, r, key, a, at in rows
    ]


def event_ids_between(low: int, high: int, limit: int) -> dict[int, int] | None:
    """The ids in the whole event log with low < id <= high (every batch's), each with its batch, or
    None if more than `limit` (too many to check one by one)."""
    from spawner.models import RunEvent

    rows = list(RunEvent.objects.filter(id__gt=low, id__lte=high).values_list("id", "batch_id")[: limit + 1])
    return None if len(rows) > limit else dict(rows)


def batch_status(batch_id: int) -> str | None:
    return Batch.objects.filter(id=batch_id).values_list("status", flat=True).first()


def personal_webhook(user):
    """The person's own notification webhook (PersonalWebhook) or None."""
    from spawner.models import PersonalWebhook

    return PersonalWebhook.objects.filter(user_id=user.id).first()


# --- clusters ---------------------------------------------------------------------------


def clusters() -> list:
    """The cluster registry for the clusters page and the API: every cluster seen within the last hour,
    by name, each with `alive` (a heartbeat within the lease) and `age` (seconds since its last one).
    Callers check `permissions.may_manage_clusters`."""
    from django.utils import timezone

    from spawner.engine import registry
    from spawner.models import WorkerHeartbeat

    now = timezone.now()
    lease = registry.lease()
    rows = list(WorkerHeartbeat.objects.order_by("name"))
    for row in rows:
        row.age = max(0.0, (now - row.seen_at).total_seconds())
        row.alive = now - row.seen_at <= lease
        row.shown_state = row.state if row.alive else "silent"
    return rows
