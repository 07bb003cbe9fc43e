"""The merge queue and best of N through the REST API: what the batch page's merge section and the
candidates page show, and their buttons.

Each action calls the service the page's button calls (`dashboard/pages/merging.py`), with the person
asking as the actor: the same permission checks (resolving escalations; a re-run on top also
launching), the same refusals (a step in a state that does not allow the action is a 409 naming what
it allows). Batches are not hidden from other people here, as in the browser: whoever may resolve
escalations acts on any batch's queue, anyone else gets a 403.
"""

from __future__ import annotations

from django.http import Http404
from django.shortcuts import get_object_or_404
from django.urls import reverse
from ninja import Query, Router
from ninja.errors import HttpError

from dashboard.api import schemas
from dashboard.api.endpoints import actor
from dashboard.pages.merging import DONE
from spawner import selectors, services
from spawner.models import AgentRun, Batch, MergeStep

router = Router()

ERRORS = {401: schemas.Problem, 403: schemas.Problem, 404: schemas.Problem}
WRITE_ERRORS = {**ERRORS, 409: schemas.Problem}
TAGS = ["merge queue"]


def _queue(batch: Batch, *, diff: bool = True) -> dict:
    queue = selectors.merge_queue(batch)
    if queue is None:
        raise Http404(
            f"batch #{batch.id} has no merge queue: its agents did not run in worktrees, "
            "or its workspace says merge: none"
        )
    integration = selectors.integration_diff(batch) or {}
    return {
        **queue,
        "matrix": selectors.merge_conflict_matrix(batch),
        "integration": {
            "branch": integration.get("branch", queue["integration_branch"]),
            "head": integration.get("head") or "",
            "summary": integration.get("summary"),
            "diff": integration.get("text", "") if diff else "",
            "truncated": bool(integration.get("truncated")),
        },
        "take_commands": selectors.integration_take_commands(batch),
        "candidates_url": reverse("api-1:merge-candidates", args=[batch.id]),
    }


def _step(step_id: int) -> MergeStep:
    return get_object_or_404(MergeStep.objects.select_related("run", "batch"), id=step_id)


def _step_now(step: MergeStep) -> dict:
    """The step as the queue shows it now (after the action)."""
    queue = selectors.merge_queue(step.batch) or {"steps": []}
    found = next((s for s in queue["steps"] if s["id"] == step.id), None)
    if found is None:  # gone from the queue meanwhile (a reset, the batch deleted)
        raise HttpError(
            409, f"merge step {step.id} is no longer in the queue: read GET /api/batches/{step.batch_id}/merge"
        )
    return found


def _done(step: MergeStep, detail: str, **extra) -> dict:
    return {"detail": detail, "step": _step_now(step), **extra}


# --- reads ------------------------------------------------------------------------------------


@router.get(
    "/batches/{int:batch_id}/merge",
    response={200: schemas.MergeQueueOut, **ERRORS},
    url_name="batch-merge",
    tags=TAGS,
)
def merge_get(
    request,
    batch_id: int,
    diff: bool = Query(True, description="Include the integration branch's diff text (at most 2 MB)."),
):
    """The batch's merge queue: each run's step (state, conflict files and hunks, what may be done
    now), the pre-check's conflict matrix, the integration branch (head, diff summary, diff) and the
    commands that take it into your own branch. 404 for a batch without a merge queue."""
    return _queue(get_object_or_404(Batch, id=batch_id), diff=diff)


@router.get(
    "/batches/{int:batch_id}/candidates",
    response={200: schemas.CandidatesOut, **ERRORS},
    url_name="merge-candidates",
    tags=TAGS,
)
def candidates(request, batch_id: int):
    """Best of N: every run side by side (status, gate, duration, cost, diff, place in the queue, the
    aggregation's winner). 404 for a batch whose agents did not run in worktrees."""
    data = selectors.merge_candidates(get_object_or_404(Batch, id=batch_id))
    if data is None:
        raise Http404("this batch's agents did not run in worktrees: there are no diffs to compare")
    return data


# --- a step's actions -------------------------------------------------------------------------


@router.post(
    "/merge-steps/{int:step_id}/merge",
    response={200: schemas.MergeActionOut, **WRITE_ERRORS},
    url_name="merge-step-merge",
    tags=TAGS,
)
def step_merge(request, step_id: int):
    """Queue the run to merge: waiting (manual mode), skipped, reverted, or after a failed gate."""
    step = _step(step_id)
    services.merge_step_merge(step=step, actor=actor(request))
    return _done(step, DONE["merge"].format(key=step.run.key, value=None))


@router.post(
    "/merge-steps/{int:step_id}/skip",
    response={200: schemas.MergeActionOut, **WRITE_ERRORS},
    url_name="merge-step-skip",
    tags=TAGS,
)
def step_skip(request, step_id: int):
    """Leave the run out of the integration branch; its merge escalation is dismissed."""
    step = _step(step_id)
    services.merge_step_skip(step=step, actor=actor(request))
    return _done(step, DONE["skip"].format(key=step.run.key, value=None))


@router.post(
    "/merge-steps/{int:step_id}/keep-sides",
    response={200: schemas.MergeActionOut, 422: schemas.Problem, **WRITE_ERRORS},
    url_name="merge-step-keep-sides",
    tags=TAGS,
)
def step_keep_sides(request, step_id: int, body: schemas.KeepSidesIn):
    """Resolve a conflict by keeping one side per conflicting file; the queue merges it next. A
    choice that leaves out a conflicting file, or names another, is refused (409)."""
    step = _step(step_id)
    services.merge_step_keep_sides(step=step, sides=body.sides, actor=actor(request))
    chosen = ", ".join(f"{path}: {side}" for path, side in sorted(body.sides.items()))
    return _done(step, f"Keeping {chosen} for '{step.run.key}'; the queue merges it next.")


@router.post(
    "/merge-steps/{int:step_id}/rerun",
    response={200: schemas.MergeActionOut, **WRITE_ERRORS},
    url_name="merge-step-rerun",
    tags=TAGS,
)
def step_rerun(request, step_id: int):
    """Run the agent again on top of the integration branch, the conflict added to its prompt; when
    it succeeds it is merged again. Needs the permission to launch too."""
    step = _step(step_id)
    attempt = services.merge_step_rerun(step=step, actor=actor(request))
    return _done(step, DONE["rerun"].format(key=step.run.key, value=attempt), attempt=attempt.number)


@router.post(
    "/merge-steps/{int:step_id}/by-hand",
    response={200: schemas.MergeActionOut, **WRITE_ERRORS},
    url_name="merge-step-by-hand",
    tags=TAGS,
)
def step_by_hand(request, step_id: int):
    """Put the conflict in the run's worktree (the integration branch merged in, markers left) to
    edit on the server; then mark it resolved."""
    step = _step(step_id)
    found = services.merge_step_by_hand(step=step, actor=actor(request))
    files = ", ".join(found["files"]) or "the conflicting files"
    resolved = reverse("api-1:merge-step-resolved", args=[step.id])
    detail = f"The conflict of '{step.run.key}' is in its worktree {found['worktree']}: edit {files}, "
    detail += f"then POST {resolved}."
    return _done(step, detail, worktree=found["worktree"], files=found["files"])


@router.post(
    "/merge-steps/{int:step_id}/resolved",
    response={200: schemas.MergeActionOut, **WRITE_ERRORS},
    url_name="merge-step-resolved",
    tags=TAGS,
)
def step_resolved(request, step_id: int):
    """The conflict was resolved by hand in the run's worktree: commit it there; the queue merges it
    next. Refused (409) while conflict markers remain."""
    step = _step(step_id)
    commit = services.merge_step_resolved(step=step, actor=actor(request))
    return _done(step, DONE["resolved"].format(key=step.run.key, value=commit), commit=commit)


@router.post(
    "/merge-steps/{int:step_id}/revert",
    response={200: schemas.MergeActionOut, **WRITE_ERRORS},
    url_name="merge-step-revert",
    tags=TAGS,
)
def step_revert(request, step_id: int):
    """Revert this run's merge on the integration branch (a revert commit)."""
    step = _step(step_id)
    commit = services.merge_step_revert(step=step, actor=actor(request))
    return _done(step, DONE["revert"].format(key=step.run.key, value=commit), commit=commit)


# --- the whole queue --------------------------------------------------------------------------


@router.post(
    "/batches/{int:batch_id}/merge/reset",
    response={200: schemas.MergeResetOut, **WRITE_ERRORS},
    url_name="merge-reset",
    tags=TAGS,
)
def merge_reset(request, batch_id: int):
    """The integration branch back to the checkpoint: merged steps (and those in conflict or after a
    failed gate) become reverted, to be merged again."""
    batch = get_object_or_404(Batch, id=batch_id)
    services.merge_reset(batch=batch, actor=actor(request))
    detail = "The integration branch is back at the checkpoint; pick what to merge."
    return {"detail": detail, "queue": _queue(batch, diff=False)}


@router.post(
    "/batches/{int:batch_id}/candidates/{int:run_id}/pick",
    response={200: schemas.PickOut, **WRITE_ERRORS},
    url_name="merge-pick",
    tags=TAGS,
)
def pick(request, batch_id: int, run_id: int):
    """Best of N: keep this run. It is merged (the integration branch reset first when another
    candidate is on it); every other step that may be skipped is skipped."""
    batch = get_object_or_404(Batch, id=batch_id)
    run = get_object_or_404(AgentRun, id=run_id, batch=batch)
    done = services.merge_pick_winner(batch=batch, run=run, actor=actor(request))
    return {"detail": f"Picked '{run.key}': " + "; ".join(done) + ".", "done": done}
