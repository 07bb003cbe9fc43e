"""The merge queue on the batch page, and best of N: candidates side by side, a person picks one.

The section (`templates/dashboard/_merge_queue.html`) is rendered once for everyone, by the page
and by the live relay on every `merge.*` event; buttons carry `data-needs` so a reader without the
permission sees the state and no buttons (a post is refused by the service all the same). Each
action calls a service with the user as the actor; an htmx post gets a notice back, the section
itself updates over the websocket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_GET, require_POST
from pygments.lexers import TextLexer, get_lexer_for_filename
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

from dashboard.pages.actions import _answer, _attempt
from dashboard.pages.views import HtmxHttpRequest
from spawner import permissions, selectors, services
from spawner.models import AgentRun, Batch, MergeStep

# What each state looks like: an icon and words, never colour alone.
STATE_LOOK = {
    "queued": ("◷", "queued"),
    "waiting": ("☐", "waiting for a person"),
    "merged": ("✔", "merged"),
    "conflict": ("⚠", "conflict"),
    "resolving": ("✎", "resolving by hand"),
    "rerunning": ("↻", "re-running on top"),
    "gate_failed": ("✘", "gate failed"),
    "skipped": ("↷", "skipped"),
    "reverted": ("↶", "reverted"),
}
# The buttons of a step: action -> (label, what the reader needs, a question to confirm, style).
BUTTONS = {
    "merge": ("Merge", "resolve", "", "primary"),
    "rerun": ("Re-run on top", "resolve launch", "", ""),
    "by_hand": ("Resolve by hand", "resolve", "", ""),
    "resolved": ("Mark resolved", "resolve", "", "primary"),
    "revert": ("Revert", "resolve", "Revert this run's merge on the integration branch?", "danger"),
    "skip": ("Skip", "resolve", "", ""),
}
DONE = {
    "merge": "'{key}' is queued to merge.",
    "skip": "'{key}' is skipped: it stays out of the integration branch.",
    "revert": "Reverted the merge of '{key}' ({value:.10}).",
    "rerun": "'{key}' runs again on top of the integration branch (attempt {value.number}).",
    "resolved": "Committed the resolution of '{key}' ({value:.10}); the queue merges it next.",
}
SHOW_DIFF_LINES = 4000
RACES = ("first_success", "vote")


# --- a unified diff, highlighted on the server ---------------------------------------------


@dataclass
class DiffLine:
    kind: str  # add, del, ctx, hunk, meta
    html: SafeString


@dataclass
class DiffFile:
    path: str
    added: int = 0
    removed: int = 0
    lines: list[DiffLine] = field(default_factory=list)


def _lexer(path: str):
    try:
        return get_lexer_for_filename(PurePosixPath(path).name, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return TextLexer(stripnl=False, ensurenl=False)


def _code(text: str, lexer) -> str:
    """One line of code, escaped, its tokens in spans named like Pygments' short classes."""
    out = []
    for token, value in lexer.get_tokens(text):
        value = value.rstrip("\n") if value.endswith("\n") else value
        if not value:
            continue
        css = STANDARD_TYPES.get(token) or STANDARD_TYPES.get(token.parent, "")
        out.append(f'<span class="{css}">{escape(value)}</span>' if css else escape(value))
    return "".join(out)


def diff_files(text: str, *, most_lines: int = SHOW_DIFF_LINES) -> tuple[list[DiffFile], bool]:
    """A unified diff (git's), file by file, each line escaped and highlighted. Returns (files, cut)."""
    files: list[DiffFile] = []
    current: DiffFile | None = None
    lexer = TextLexer()
    shown = 0
    for line in text.splitlines():
        if shown >= most_lines:
            return files, True
        shown += 1
        if line.startswith("diff --git "):
            parts = line.split(" b/", 1)
            path = parts[1] if len(parts) == 2 else line[len("diff --git ") :]
            current = DiffFile(path=path)
            files.append(current)
            lexer = _lexer(path)
            continue
        if current is None:
            current = DiffFile(path="")
            files.append(current)
        if line.startswith(("+++ ", "--- ", "index ", "new file", "deleted file", "similarity", "rename ", "Binary")):
            current.lines.append(DiffLine("meta", escape(line)))
        elif line.startswith("@@"):
            current.lines.append(DiffLine("hunk", escape(line)))
        elif line.startswith("+"):
            current.added += 1
            current.lines.append(DiffLine("add", mark_safe("+" + _code(line[1:], lexer))))  # noqa: S308 - escaped
        elif line.startswith("-"):
            current.removed += 1
            current.lines.append(DiffLine("del", mark_safe("-" + _code(line[1:], lexer))))  # noqa: S308 - escaped
        else:
            body = line[1:] if line.startswith(" ") else line
            current.lines.append(DiffLine("ctx", mark_safe(" " + _code(body, lexer))))  # noqa: S308 - escaped
    return files, False


# --- the section's data --------------------------------------------------------------------


def _matrix_table(matrix: dict | None) -> dict | None:
    """Runs × runs: each cell the files the pair conflicts on ([] when clean), plus each run against
    the integration head."""
    if not matrix:
        return None
    runs = matrix["runs"]
    pairs = {}
    for pair in matrix["pairs"]:
        pairs[(pair["a"], pair["b"])] = pairs[(pair["b"], pair["a"])] = pair["files"]
    rows = []
    for a in runs:
        cells = [{"self": a == b, "other": b, "files": pairs.get((a, b), [])} for b in runs]
        rows.append({"key": a, "cells": cells, "integration": matrix["integration"].get(a, [])})
    return {
        "runs": runs,
        "rows": rows,
        "conflicts": len(matrix["pairs"]),
        "checked_pairs": matrix["checked_pairs"],
        "computed_at": matrix["computed_at"],
    }


def merge_context(batch: Batch, may: dict | None = None) -> dict:
    """What the merge section shows; {"merge": None} for a batch without a merge queue."""
    queue = selectors.merge_queue(batch)
    if queue is None:
        return {"batch": batch, "merge": None, "may": may or {}}
    for step in queue["steps"]:
        step["icon"], step["label"] = STATE_LOOK.get(step["state"], ("•", step["state"]))
        step["buttons"] = [
            dict(zip(("action", "label", "needs", "confirm", "css"), (a, *BUTTONS[a]), strict=True))
            for a in step["actions"]
            if a in BUTTONS
        ]
        step["keep_sides"] = "keep_sides" in step["actions"] and bool(step["conflict_files"])
        open_conflict = step["state"] in ("conflict", "resolving")
        step["conflicts"] = [
            {"path": path, "kind": step["conflict_kinds"].get(path, "content"), "hunks": step["hunks"].get(path, [])}
            for path in (step["conflict_files"] if open_conflict else [])
        ]
        sides = (step["resolution"] or {}).get("sides") or {}
        step["resolved_as"] = ", ".join(f"{path}: {side}" for path, side in sorted(sides.items()))
    diff = selectors.integration_diff(batch)
    files, cut = diff_files(diff["text"]) if diff and diff["text"] else ([], False)
    summary = (diff or {}).get("summary") or {}
    return {
        "batch": batch,
        "may": may or {},
        "merge": queue,
        "matrix": _matrix_table(selectors.merge_conflict_matrix(batch)),
        "integration": diff,
        "integration_summary": summary,
        "integration_files": files,
        "integration_cut": cut or bool(diff and diff["truncated"]),
        "take": selectors.integration_take_commands(batch),
        "resettable": any(s["state"] in ("merged", "conflict", "gate_failed") for s in queue["steps"]),
        "candidates": batch.aggregation in RACES,
        "disk": selectors.workspace_disk(batch),
    }


def render_section(batch: Batch, may: dict | None = None) -> str:
    """The section as the live relay sends it (the same partial the page renders), with the buttons
    readers with the rights `may` (spawner.permissions.page_may) may use."""
    return render_to_string("dashboard/_merge_queue.html#merge-section", merge_context(batch, may))


# --- actions -------------------------------------------------------------------------------


def _step(step_id: int) -> MergeStep:
    return get_object_or_404(MergeStep.objects.select_related("run", "batch"), id=step_id)


@require_POST
@login_required
def merge_step_action(request: HtmxHttpRequest, step_id: int):
    """merge, skip, revert, rerun (on top of the integration branch), by_hand, resolved."""
    step = _step(step_id)
    back = reverse("batch", args=[step.batch_id]) + "#merge-section"
    action = request.POST.get("action", "")
    calls = {
        "merge": services.merge_step_merge,
        "skip": services.merge_step_skip,
        "revert": services.merge_step_revert,
        "rerun": services.merge_step_rerun,
        "by_hand": services.merge_step_by_hand,
        "resolved": services.merge_step_resolved,
    }
    if action not in calls:
        return _answer(request, back, f"unknown merge action {action!r}", status=400)
    value, refused = _attempt(request, back, lambda: calls[action](step=step, actor=request.user))
    if refused:
        return refused
    key = step.run.key
    if action == "by_hand":
        files = ", ".join(value["files"]) or "the conflicting files"
        message = f"The conflict of '{key}' is in its worktree {value['worktree']}: edit {files}, then Mark resolved."
    else:
        message = DONE[action].format(key=key, value=value)
    return _answer(request, back, message)


@require_POST
@login_required
def merge_step_sides(request: HtmxHttpRequest, step_id: int):
    """Keep one side per conflicting file: fields `side:<path>` = ours | theirs."""
    step = _step(step_id)
    back = reverse("batch", args=[step.batch_id]) + "#merge-section"
    sides = {name[len("side:") :]: value for name, value in request.POST.items() if name.startswith("side:")}
    keep = services.merge_step_keep_sides
    _, refused = _attempt(request, back, lambda: keep(step=step, sides=sides, actor=request.user))
    if refused:
        return refused
    chosen = ", ".join(f"{path}: {side}" for path, side in sorted(sides.items()))
    return _answer(request, back, f"Keeping {chosen} for '{step.run.key}'; the queue merges it next.")


@require_POST
@login_required
def merge_reset(request: HtmxHttpRequest, batch_id: int):
    batch = get_object_or_404(Batch, id=batch_id)
    back = reverse("batch", args=[batch.id]) + "#merge-section"
    _, refused = _attempt(request, back, lambda: services.merge_reset(batch=batch, actor=request.user))
    return refused or _answer(request, back, "The integration branch is back at the checkpoint; pick what to merge.")


# --- best of N -----------------------------------------------------------------------------


@require_GET
@login_required
def candidates(request: HtmxHttpRequest, batch_id: int):
    batch = get_object_or_404(Batch, id=batch_id)
    data = selectors.merge_candidates(batch)
    if data is None:
        raise Http404("this batch's agents did not run in worktrees: there are no diffs to compare")
    for candidate in data["candidates"]:
        candidate["files"], candidate["cut"] = diff_files(candidate["diff"])
        candidate["cut"] = candidate["cut"] or candidate["truncated"]
        step = candidate["step"]
        if step:
            step["icon"], step["label"] = STATE_LOOK.get(step["state"], ("•", step["state"]))
        candidate["pickable"] = candidate["status"] == "succeeded" and data["merge_mode"] != "none"
    context = {**data, "batch": batch, "may": permissions.page_may(request.user, batch)}
    return render(request, "dashboard/compare_candidates.html", context)


@require_POST
@login_required
def pick_winner(request: HtmxHttpRequest, batch_id: int, run_id: int):
    batch = get_object_or_404(Batch, id=batch_id)
    run = get_object_or_404(AgentRun, id=run_id, batch=batch)
    back = reverse("merge-candidates", args=[batch.id])
    pick = services.merge_pick_winner
    done, refused = _attempt(request, back, lambda: pick(batch=batch, run=run, actor=request.user))
    if refused:
        return refused
    return _answer(request, back, f"Picked '{run.key}': " + "; ".join(done) + ".")
