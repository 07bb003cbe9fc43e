# ruff: noqa: B008  (Query(...) defaults are how django-ninja declares query parameters)
"""The endpoints: batches, runs, results, reviews, escalations, agent types and roles.

Each reads through `spawner.selectors` and writes through `spawner.services`, as the pages do,
with the person asking as the actor; what they may not do is a 403 problem, what does not apply
now a 409, a spec that cannot run a 422 listing every field error.
"""

from __future__ import annotations

import math

from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from ninja import Query, Router, Status
from ninja.errors import HttpError

from dashboard.api import schemas, stream
from dashboard.api.problems import problem
from dashboard.pages import exports, fanin_queries, queries
from dashboard.pages.downloads import file_download
from spawner import permissions, selectors, services
from spawner.errors import CostUnconfirmed, NotAllowed, SpecInvalid
from spawner.models import AgentRun, AgentType, Batch, Escalation, Role, RunAttempt
from spawner.states import BatchStatus, Mode

router = Router()

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_PAGE = 1_000_000
MAX_RANGE_BYTES = 4 * 1024 * 1024
SPEC_MEDIA_TYPES = {
    "application/json": "json",
    "application/yaml": "yaml",
    "application/x-yaml": "yaml",
    "text/yaml": "yaml",
    "text/x-yaml": "yaml",
    "text/plain": "yaml",
}
ERRORS = {401: schemas.Problem, 403: schemas.Problem, 404: schemas.Problem}
WRITE_ERRORS = {**ERRORS, 409: schemas.Problem}
SPEC_BODY = {
    "requestBody": {
        "required": True,
        "description": "The batch spec, as JSON (application/json) or YAML text (application/yaml, text/plain); "
        "the same spec `manage.py spawn` and the new-batch page take.",
        "content": {
            "application/json": {"schema": {"type": "object", "additionalProperties": True}},
            "application/yaml": {"schema": {"type": "string"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    }
}


def actor(request: HttpRequest):
    return request.auth


def _page(query, page: int, page_size: int) -> tuple[list, dict]:
    count = query.count()
    pages = max(1, math.ceil(count / page_size))
    start = (page - 1) * page_size
    items = list(query[start : start + page_size]) if start < count else []
    return items, {"count": count, "page": page, "pages": pages, "page_size": page_size}


def _who(user) -> str | None:
    return user.get_username() if user is not None else None


def _timings(batch: Batch) -> dict:
    return selectors.batch_summary_timings(batch)


def _batch_detail(batch: Batch) -> dict:
    return selectors.batch_record(batch)


def _spec_text(request: HttpRequest) -> str:
    """The body as spec text: JSON or YAML, UTF-8."""
    media = request.content_type.lower() if request.content_type else ""
    if media not in SPEC_MEDIA_TYPES:
        raise HttpError(415, "send the spec as application/json, application/yaml or text/plain")
    try:
        return request.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HttpError(400, f"the body is not UTF-8 text (byte {exc.start})") from None


def _load(request: HttpRequest):
    user = actor(request)
    return services.spec_load(_spec_text(request), is_admin=permissions.may_run_admin_only(user))


# --- batches ----------------------------------------------------------------------------------


@router.get("/batches", response={200: schemas.BatchPage, **ERRORS}, url_name="batches", tags=["batches"])
def batch_list(
    request,
    status: BatchStatus | None = None,
    name: str = Query("", max_length=200, description="Part of the batch's name (any case)."),
    owner: str = Query("", max_length=150, description='A user id, a username, or "cli".'),
    page: int = Query(1, ge=1, le=MAX_PAGE),
    page_size: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE),
):
    """Batches, newest first."""
    found = selectors.batches_filtered(status=status or "", name=name.strip(), owner=owner.strip())
    batches, meta = _page(found, page, page_size)
    progress = selectors.batches_progress([b.id for b in batches])
    items = [
        {
            "id": b.id,
            "name": b.name,
            "owner": _who(b.owner),
            "status": b.status,
            "mode": b.mode,
            "cancel_requested": b.cancel_requested,
            "launched_at": b.launched_at,
            "finished_at": b.finished_at,
            "counts": progress.get(b.id, {}),
            "timings": _timings(b),
            "url": reverse("api-1:batch", args=[b.id]),
        }
        for b in batches
    ]
    return {**meta, "items": items}


@router.post(
    "/batches",
    response={
        200: schemas.BatchDetail,
        201: schemas.BatchDetail,
        415: schemas.Problem,
        422: schemas.SpecProblem,
        **WRITE_ERRORS,
    },
    openapi_extra={
        **SPEC_BODY,
        "parameters": [
            {
                "in": "header",
                "name": "Idempotency-Key",
                "required": False,
                "schema": {"type": "string", "maxLength": services.IDEMPOTENCY_KEY_CHARS},
                "description": "Send the same key again (same body) and the first launch's batch comes back "
                "(200); nothing is launched twice.",
            }
        ],
    },
    url_name="batch-launch",
    tags=["batches"],
)
def batch_launch(
    request,
    confirm_cost: bool = Query(False, description="Launch even above the cost to confirm."),
    sequential: bool = Query(False, description="One task at a time, whatever the spec's mode."),
):
    """Launch a batch from a spec (201), or return the batch an earlier request with the same
    Idempotency-Key launched (200)."""
    user = actor(request)
    permissions.require(user, permissions.may_launch)
    batch_spec = _load(request)
    cost = selectors.plan_cost(batch_spec)
    if cost["needs_confirm"] and not confirm_cost:
        return _cost_unconfirmed(cost)

    def launch() -> Batch:
        return services.batch_launch(
            batch_spec=batch_spec,
            base_dir=settings.SPAWNER_WORKDIR,
            owner=user,
            confine=True,
            mode=Mode.SEQUENTIAL if sequential else None,
        )

    key = request.headers.get("Idempotency-Key")
    if key is None:
        batch, again = launch(), False
    else:
        batch, again = services.batch_launch_once(owner=user, key=key, body=request.body, launch=launch)
    return Status(200 if again else 201, _batch_detail(batch))


@router.post(
    "/batches/plan",
    response={200: schemas.PlanOut, 415: schemas.Problem, 422: schemas.SpecProblem, **ERRORS},
    openapi_extra=SPEC_BODY,
    url_name="batch-plan",
    tags=["batches"],
)
def batch_plan(request, sequential: bool = False):
    """Validate and plan a spec without launching anything: waves, critical path, estimates, cost."""
    batch_spec = _load(request)
    plan = services.batch_plan(batch_spec, sequential=sequential or None)
    return selectors.plan_view(batch_spec, plan, sequential=sequential)


@router.get(
    "/batches/{int:batch_id}", response={200: schemas.BatchDetail, **ERRORS}, url_name="batch", tags=["batches"]
)
def batch_get(request, batch_id: int):
    """A batch: its summary, timings and runs."""
    return _batch_detail(get_object_or_404(Batch.objects.select_related("owner"), id=batch_id))


@router.get(
    "/batches/{int:batch_id}/events",
    response={200: str, 400: schemas.Problem, **ERRORS},
    openapi_extra={
        "parameters": [
            {
                "in": "header",
                "name": "Last-Event-ID",
                "required": False,
                "schema": {"type": "integer", "minimum": 0},
                "description": "Resume after this event (what a reconnecting EventSource sends); wins over `after`.",
            }
        ],
        "responses": {
            200: {
                "description": "Server-Sent Events: `snapshot` (the batch, when neither `after` nor Last-Event-ID "
                "is given), one event per log entry (`id`: its id, `event`: its kind, `data`: JSON with kind, "
                "status, run, key, attempt, at), `: keep-alive` comments, and `end` once the batch has ended.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        },
    },
    url_name="batch-events",
    tags=["batches"],
)
def batch_events(
    request,
    batch_id: int,
    after: int | None = Query(None, ge=0, le=2**62, description="Send the events after this event id."),
):
    """Follow a batch live without polling: its events as they are logged, until it ends."""
    get_object_or_404(Batch.objects.only("id"), id=batch_id)
    resume = request.headers.get("Last-Event-ID")
    if resume is not None:
        resume = resume.strip()
        if not resume.isascii() or not resume.isdigit() or len(resume) > 18:
            raise HttpError(400, f"Last-Event-ID must be an event id (a whole number), not {resume[:40]!r}")
        after = int(resume)
    return stream.response(request, batch_id, after)


@router.post(
    "/batches/{int:batch_id}/cancel",
    response={200: schemas.OK, **WRITE_ERRORS},
    url_name="batch-cancel",
    tags=["batches"],
)
def batch_cancel(request, batch_id: int):
    batch = get_object_or_404(Batch, id=batch_id)
    services.batch_cancel(batch=batch, actor=actor(request))
    return {"detail": f"cancelling batch #{batch.id}: running agents are being stopped"}


@router.post(
    "/batches/{int:batch_id}/retry-failed",
    response={200: schemas.RetryFailedOut, **WRITE_ERRORS},
    url_name="batch-retry-failed",
    tags=["batches"],
)
def batch_retry_failed(request, batch_id: int):
    """Retry every run of the batch that failed."""
    batch = get_object_or_404(Batch, id=batch_id)
    retried, refused = services.batch_retry_failed(batch=batch, actor=actor(request))
    return {"retried": retried, "not_retried": refused}


@router.post(
    "/batches/{int:batch_id}/rerun-sequential",
    response={201: schemas.BatchDetail, **WRITE_ERRORS},
    url_name="batch-rerun",
    tags=["batches"],
)
def batch_rerun_sequential(request, batch_id: int):
    """Run the same spec again, one task at a time, to measure the parallel speedup."""
    batch = get_object_or_404(Batch, id=batch_id)
    if batch.mode != Mode.PARALLEL:
        raise HttpError(409, "this batch already ran sequentially")
    try:
        rerun = services.batch_rerun_sequential(batch=batch, actor=actor(request))
    except SpecInvalid as exc:
        raise HttpError(409, f"the stored spec no longer launches: {exc}") from None
    return Status(201, _batch_detail(rerun))


@router.get(
    "/batches/{int:batch_id}/compare",
    response={200: schemas.CompareOut, **ERRORS},
    url_name="compare",
    tags=["batches"],
)
def batch_compare(request, batch_id: int):
    """The parallel batch and its latest sequential re-run, side by side."""
    parallel, sequential = queries.compare_pair(get_object_or_404(Batch, id=batch_id))

    measured = selectors.measured_comparison(parallel, sequential) if sequential else None

    def side(b: Batch, n: int) -> dict:
        own = measured["own"][n] if measured else None
        return {
            "id": b.id,
            "name": b.name,
            "mode": b.mode,
            "status": b.status,
            "timings": _timings(b),
            "own_pass": own
            and {"wall_seconds": own["wall"], "work_seconds": own["work"], "left_out_attempts": own["left_out"]},
        }

    return {
        "parallel": side(parallel, 0),
        "sequential": side(sequential, 1) if sequential else None,
        "measured_speedup": measured["speedup"] if measured else None,
    }


# --- results and reviews ----------------------------------------------------------------------


@router.get(
    "/batches/{int:batch_id}/aggregation", response={200: dict, **ERRORS}, url_name="aggregation", tags=["results"]
)
def batch_aggregation(request, batch_id: int):
    """The combined result, exactly as the result page's JSON export and `spawn --json` give it."""
    data = selectors.aggregation_of(get_object_or_404(Batch, id=batch_id))
    if data is None:
        raise Http404(f"batch #{batch_id} has no combined result yet (it is computed when the batch ends)")
    return data


@router.get(
    "/batches/{int:batch_id}/aggregation.md",
    response={200: str, **ERRORS},
    openapi_extra={"responses": {200: {"description": "Markdown", "content": {"text/markdown": {}}}}},
    url_name="aggregation-md",
    tags=["results"],
)
def batch_aggregation_markdown(request, batch_id: int):
    """The combined result as Markdown, as the result page's export gives it."""
    batch = get_object_or_404(Batch, id=batch_id)
    data = selectors.aggregation_of(batch)
    if data is None:
        raise Http404(f"batch #{batch_id} has no combined result yet (it is computed when the batch ends)")
    body = exports.result_markdown(data, title=f"Batch #{batch.id} {batch.name}: combined result")
    return HttpResponse(body, content_type="text/markdown; charset=utf-8")


@router.get(
    "/batches/{int:batch_id}/findings",
    response={200: schemas.FindingsOut, **ERRORS},
    url_name="findings",
    tags=["results"],
)
def batch_findings(
    request,
    batch_id: int,
    severity: str = Query("", max_length=20),
    file: str = Query("", max_length=200),
    agent: str = Query("", max_length=100),
    sort: str = Query("severity", max_length=20, description="severity, file or agents; '-' before: the other way"),
):
    """The merged findings, filtered and sorted as on the result page."""
    batch = get_object_or_404(Batch, id=batch_id)
    data = selectors.aggregation_of(batch) or {}
    filters = fanin_queries.FindingFilters.from_query(
        {"severity": severity, "file": file, "agent": agent, "sort": sort}
    )
    return {
        "strategy": data.get("strategy", ""),
        "total": len(data.get("findings") or []),
        "findings": fanin_queries.findings(data, filters),
    }


def _reviews(batch: Batch) -> dict:
    return {
        "state": selectors.review_state(batch),
        "reviews": [
            {
                "id": r.id,
                "author": _who(r.author),
                "decision": r.decision,
                "comment": r.comment,
                "created_at": r.created_at,
            }
            for r in batch.reviews.select_related("author").order_by("id")
        ],
    }


@router.get(
    "/batches/{int:batch_id}/reviews",
    response={200: schemas.ReviewsOut, **ERRORS},
    url_name="reviews",
    tags=["results"],
)
def review_list(request, batch_id: int):
    return _reviews(get_object_or_404(Batch, id=batch_id))


@router.post(
    "/batches/{int:batch_id}/reviews",
    response={201: schemas.ReviewsOut, **WRITE_ERRORS},
    url_name="review-submit",
    tags=["results"],
)
def review_submit(request, batch_id: int, body: schemas.ReviewIn):
    """Approve, request changes (say what) or comment."""
    batch = get_object_or_404(Batch, id=batch_id)
    services.review_submit(batch=batch, author=actor(request), decision=body.decision, comment=body.comment)
    return Status(201, _reviews(batch))


# --- runs -------------------------------------------------------------------------------------


def _log_bytes(attempt: RunAttempt | None) -> int | None:
    return queries.log_size(attempt)


@router.get("/runs/{int:run_id}", response={200: schemas.RunDetail, **ERRORS}, url_name="run", tags=["runs"])
def run_get(request, run_id: int):
    run = get_object_or_404(AgentRun.objects.select_related("batch", "agent_type"), id=run_id)
    summary = next(r for r in selectors.batch_summary(run.batch)["runs"] if r["key"] == run.key)
    return {
        **summary,
        "id": run.id,
        "batch": run.batch_id,
        "role": run.role,
        "prompt": run.prompt,
        "depends_on": run.depends_on,
        "files": run.files,
        "timeout": run.timeout,
        "retries": run.retries,
        "queued_at": run.queued_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "dependents": queries.run_context(run)["dependents"],
        "url": reverse("api-1:run", args=[run.id]),
    }


@router.get(
    "/runs/{int:run_id}/attempts",
    response={200: list[schemas.AttemptOut], **ERRORS},
    url_name="run-attempts",
    tags=["runs"],
)
def run_attempts(request, run_id: int):
    run = get_object_or_404(AgentRun, id=run_id)
    return [
        {
            "number": a.number,
            "status": a.status,
            "queued_at": a.queued_at,
            "started_at": a.started_at,
            "finished_at": a.finished_at,
            "duration_seconds": a.duration_seconds,
            "exit_code": a.exit_code,
            "error": a.error,
            "host": a.host,
            "cluster": a.cluster,
            "log_bytes": _log_bytes(a),
            "branch": a.branch,
            "head_commit": a.head_commit,
            "changes": a.changes,
            "usage": a.usage,
        }
        for a in run.attempts.order_by("number")
    ]


@router.get(
    "/runs/{int:run_id}/output",
    response={200: str, 416: schemas.Problem, **ERRORS},
    openapi_extra={"responses": {200: {"description": "The log as text (masked)", "content": {"text/plain": {}}}}},
    url_name="run-output",
    tags=["runs"],
)
def run_output(
    request,
    run_id: int,
    attempt: int | None = Query(None, ge=1, le=1_000_000, description="Default: the current attempt."),
    tail: int | None = Query(None, ge=1, le=MAX_RANGE_BYTES, description="The last bytes (default 16 KiB)."),
    start: int | None = Query(None, ge=0, le=2**62, description="A byte range: from here…"),
    end: int | None = Query(None, ge=0, le=2**62, description="…to here (excluded)."),
    whole: bool = Query(False, description="The whole log, streamed."),
):
    """An attempt's output, its secrets masked: the tail, a byte range, or the whole log. The
    X-Log-Start, X-Log-End and X-Log-Size headers say which bytes came back."""
    run = get_object_or_404(AgentRun.objects.select_related("agent_type"), id=run_id)
    number = attempt or run.attempt
    found = get_object_or_404(RunAttempt.objects.select_related("run__agent_type"), run_id=run.id, number=number)
    source = selectors.log_open(found)
    if source is None:
        raise Http404(f"the log of attempt {number} is not on this server")
    secrets = selectors.log_secrets(found)
    if whole:
        masker = selectors.log_masker(secrets) if secrets else None
        name = f"batch-{run.batch_id}-{run.key}-attempt-{number}.log"
        return file_download(source, filename=name, content_type="text/plain; charset=utf-8", masker=masker)
    try:
        return _output_range(source, secrets, tail=tail, start=start, end=end)
    finally:
        source.close()


def _output_range(source, secrets: list[str], *, tail: int | None, start: int | None, end: int | None):
    size = source.size
    if start is not None or end is not None:
        begin, stop = start or 0, size if end is None else min(end, size)
        if begin > stop or (begin >= size and size > 0):
            return problem(
                416,
                f"the range {begin}-{stop} is outside the log ({size} bytes)",
                title="Range not satisfiable",
                kind="range",
            )
        if stop - begin > MAX_RANGE_BYTES:
            raise HttpError(422, f"ask for at most {MAX_RANGE_BYTES} bytes at a time, or whole=true")
    else:
        stop = size
        begin = max(0, size - (tail or settings.SPAWNER["TAIL_BYTES"]))
    data = selectors.log_range(source, begin, stop, secrets)
    response = HttpResponse(data, content_type="text/plain; charset=utf-8")
    response["X-Log-Start"], response["X-Log-End"], response["X-Log-Size"] = str(begin), str(stop), str(size)
    return response


@router.post(
    "/runs/{int:run_id}/retry", response={200: schemas.OK, **WRITE_ERRORS}, url_name="run-retry", tags=["runs"]
)
def run_retry(request, run_id: int):
    run = get_object_or_404(AgentRun.objects.select_related("batch", "agent_type"), id=run_id)
    services.run_retry(run=run, actor=actor(request))
    return {"detail": f"retrying '{run.key}': attempt {run.attempt + 1} is queued"}


@router.post(
    "/runs/{int:run_id}/cancel", response={200: schemas.OK, **WRITE_ERRORS}, url_name="run-cancel", tags=["runs"]
)
def run_cancel(request, run_id: int):
    run = get_object_or_404(AgentRun.objects.select_related("batch"), id=run_id)
    services.run_cancel(run=run, actor=actor(request))
    return {"detail": f"cancelled run '{run.key}'"}


# --- escalations ------------------------------------------------------------------------------


def _escalation(e: Escalation) -> dict:
    return selectors.escalation_view(e)


@router.get(
    "/escalations", response={200: schemas.EscalationPage, **ERRORS}, url_name="escalations", tags=["escalations"]
)
def escalation_list(
    request,
    state: Escalation.State | None = Query(None, description="Default: every state, open first."),
    batch: int | None = Query(None, ge=1, le=2**62),
    mine: bool = Query(False, description="Only those assigned to me."),
    page: int = Query(1, ge=1, le=MAX_PAGE),
    page_size: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE),
):
    filters = fanin_queries.QueueFilters(show="mine" if mine else "all", batch=batch, page=page)
    found = fanin_queries.queue(filters, actor(request).id).select_related("run", "assignee", "resolved_by")
    if state:
        found = found.filter(state=state)
    items, meta = _page(found, page, page_size)
    return {**meta, "items": [_escalation(e) for e in items]}


@router.post(
    "/escalations/{int:escalation_id}/assign",
    response={200: schemas.EscalationOut, 422: schemas.Problem, **WRITE_ERRORS},
    url_name="escalation-assign",
    tags=["escalations"],
)
def escalation_assign(request, escalation_id: int, body: schemas.AssignIn):
    escalation = get_object_or_404(Escalation, id=escalation_id)
    assignee = None
    if body.assignee:
        users = get_user_model()
        assignee = users.objects.filter(**{users.USERNAME_FIELD: body.assignee}, is_active=True).first()
        if assignee is None:
            return problem(422, f"assignee: no active user {body.assignee!r}")
    services.escalation_assign(escalation=escalation, assignee=assignee, actor=actor(request))
    escalation.refresh_from_db()
    return _escalation(escalation)


@router.post(
    "/escalations/{int:escalation_id}/resolve",
    response={200: schemas.EscalationOut, **WRITE_ERRORS},
    url_name="escalation-resolve",
    tags=["escalations"],
)
def escalation_resolve(request, escalation_id: int, body: schemas.ResolveIn):
    """retry (the run gets a new attempt), accept (the partial result stands) or dismiss (say why)."""
    escalation = get_object_or_404(Escalation.objects.select_related("run__agent_type", "run__batch"), id=escalation_id)
    services.escalation_resolve(escalation=escalation, action=body.action, note=body.note, actor=actor(request))
    escalation.refresh_from_db()
    return _escalation(escalation)


# --- agent types and roles --------------------------------------------------------------------


@router.get(
    "/agent-types", response={200: list[schemas.AgentTypeOut], **ERRORS}, url_name="agent-types", tags=["catalog"]
)
def agent_types(request):
    return [
        {
            "name": t.name,
            "description": t.description,
            "kind": t.kind,
            "available": t.available,
            "unavailable_reason": t.unavailable_reason,
            "admin_only": t.admin_only,
            "default_timeout": t.default_timeout,
            "max_concurrency": t.max_concurrency,
            "prompt_kind": t.prompt_kind,
            "model": t.model,
        }
        for t in AgentType.objects.order_by("name")
    ]


@router.get("/roles", response={200: list[schemas.RoleOut], **ERRORS}, url_name="roles", tags=["catalog"])
def roles(request):
    return [{"name": r.name, "template": r.template} for r in Role.objects.order_by("name")]


# --- saved templates: list, read, launch with variables ------------------------------------------


def _schedule(row) -> dict:
    return {
        "id": row.id,
        "template": row.template_id,
        "cron": row.cron,
        "timezone": row.timezone,
        "paused": row.schedule.repeats == 0,
        "next_run": row.schedule.next_run,
        "variables": row.variables,
        "run_as": _who(row.run_as) if row.run_as_id else None,
        "url": reverse("api-1:schedule", args=[row.id]),
    }


def _template(t, *, launches: bool = True) -> dict:
    from django.db.models import Sum

    rows = []
    if launches:
        found = Batch.objects.filter(template=t).order_by("-id")[:50]
        costs = dict(
            AgentRun.objects.filter(batch__in=list(found))
            .order_by()
            .values_list("batch_id")
            .annotate(total=Sum("cost_usd"))
        )
        rows = [
            {
                "id": b.id,
                "status": b.status,
                "launched_at": b.launched_at,
                "wall_seconds": b.wall_seconds,
                "cost_usd": costs.get(b.id),
                "url": reverse("api-1:batch", args=[b.id]),
            }
            for b in found
        ]
    schedules = [_schedule(one) for one in t.schedules.all()]
    return {
        "id": t.id,
        "name": t.name,
        "owner": _who(t.owner),
        "description": t.description,
        "variables": [{"name": n, "default": d} for n, d in t.variables.items()],
        "spec_text": t.spec_text,
        "schedules": schedules,
        "launches": rows,
        "url": reverse("api-1:template", args=[t.id]),
    }


@router.get("/templates", response={200: list[schemas.TemplateOut], **ERRORS}, url_name="templates", tags=["templates"])
def template_list(request, name: str | None = Query(None, max_length=100, description="Only those so named.")):
    """Saved batch templates: everyone's, and the global ones (the first 500 by name; `name` finds
    one among more)."""
    from spawner.models import BatchTemplate

    found = BatchTemplate.objects.select_related("owner").prefetch_related("schedules__schedule")
    if name:
        found = found.filter(name=name)
    return [_template(t, launches=False) for t in found.order_by("name", "id")[:500]]


@router.get(
    "/templates/{int:template_id}",
    response={200: schemas.TemplateOut, **ERRORS},
    url_name="template",
    tags=["templates"],
)
def template_get(request, template_id: int):
    """A template: its variables, schedules and the batches launched from it."""
    from spawner.models import BatchTemplate

    return _template(get_object_or_404(BatchTemplate.objects.select_related("owner"), id=template_id))


@router.post(
    "/templates/{int:template_id}/launch",
    response={201: schemas.BatchDetail, 422: schemas.SpecProblem, **WRITE_ERRORS},
    url_name="template-launch",
    tags=["templates"],
)
def template_launch(
    request,
    body: schemas.TemplateLaunchIn,
    template_id: int,
    confirm_cost: bool = Query(False, description="Launch even when its cost needs a confirmation."),
):
    """Fill the template's variables (the defaults for those not given) and launch it: the same
    checks as launching its spec, the cost confirmation included (a 409 until confirm_cost=true)."""
    from spawner.models import BatchTemplate

    t = get_object_or_404(BatchTemplate, id=template_id)
    try:
        batch = services.template_launch(
            template=t, values=body.variables, actor=actor(request), confirm_cost=confirm_cost
        )
    except CostUnconfirmed as exc:
        return _cost_unconfirmed(exc.cost)
    return Status(201, _batch_detail(batch))


def _cost_unconfirmed(cost: dict):
    """The 409 of a launch (a spec's or a template's) whose cost needs the person's yes."""
    return problem(
        409,
        f"{cost['confirm_reason']}: send confirm_cost=true to launch it",
        estimate_usd=cost["estimate_usd"],
        confirm_above_usd=cost["confirm_above_usd"],
        unknown_paid=cost["unknown_paid"],
    )


def _save(request, body: schemas.TemplateIn, template=None):
    return services.template_save(
        actor=actor(request),
        name=body.name.strip(),
        spec_text=body.spec_text,
        variables_text=services.template_declarations(body.variables),
        description=body.description.strip(),
        shared=body.shared if template is None else template.owner_id is None,
        template=template,
    )


@router.post(
    "/templates",
    response={201: schemas.TemplateOut, 422: schemas.SpecProblem, **WRITE_ERRORS},
    url_name="template-create",
    tags=["templates"],
)
def template_create(request, body: schemas.TemplateIn):
    """Save a batch spec as a named template (yours, or for everyone with `shared`, admins only). Its
    spec is checked as a launch would check it, filled with the variables' defaults; a name you
    already use is a 409."""
    permissions.require(actor(request), permissions.may_launch)
    return Status(201, _template(_save(request, body)))


@router.put(
    "/templates/{int:template_id}",
    response={200: schemas.TemplateOut, 422: schemas.SpecProblem, **WRITE_ERRORS},
    url_name="template-update",
    tags=["templates"],
)
def template_update(request, template_id: int, body: schemas.TemplateIn):
    """Change a template (the whole of it): its owner, or an admin. `shared` cannot change."""
    from spawner.models import BatchTemplate

    template = get_object_or_404(BatchTemplate.objects.select_related("owner"), id=template_id)
    if not services.may_edit_template(actor(request), template):
        raise NotAllowed("only its owner or an admin (with the permission to launch) may change this template")
    return _template(_save(request, body, template))


@router.delete(
    "/templates/{int:template_id}",
    response={204: None, **WRITE_ERRORS},
    url_name="template-delete",
    tags=["templates"],
)
def template_delete(request, template_id: int):
    """Delete a template and its schedules: its owner, or an admin. Its batches stay."""
    from spawner.models import BatchTemplate

    template = get_object_or_404(BatchTemplate, id=template_id)
    services.template_delete(template=template, actor=actor(request))
    return Status(204, None)


@router.post(
    "/templates/{int:template_id}/schedules",
    response={201: schemas.ScheduleOut, 422: schemas.SpecProblem, **WRITE_ERRORS},
    url_name="schedule-create",
    tags=["templates"],
)
def schedule_create(request, template_id: int, body: schemas.ScheduleIn):
    """Launch the template on a cron expression in a time zone, as you (its owner or an admin), with
    these variables. A bad cron expression, time zone or variable is a 422 naming it."""
    from spawner.models import BatchTemplate

    template = get_object_or_404(BatchTemplate.objects.select_related("owner"), id=template_id)
    link = services.schedule_create(
        template=template, cron=body.cron, tz=body.timezone.strip(), values=body.variables, actor=actor(request)
    )
    return Status(201, _schedule(link))


def _link(schedule_id: int):
    from spawner.models import TemplateSchedule

    return get_object_or_404(TemplateSchedule.objects.select_related("template", "schedule", "run_as"), id=schedule_id)


@router.get(
    "/schedules/{int:schedule_id}",
    response={200: schemas.ScheduleOut, **ERRORS},
    url_name="schedule",
    tags=["templates"],
)
def schedule_get(request, schedule_id: int):
    return _schedule(_link(schedule_id))


@router.delete(
    "/schedules/{int:schedule_id}",
    response={204: None, **WRITE_ERRORS},
    url_name="schedule-delete",
    tags=["templates"],
)
def schedule_delete(request, schedule_id: int):
    services.schedule_delete(link=_link(schedule_id), actor=actor(request))
    return Status(204, None)


@router.post(
    "/schedules/{int:schedule_id}/pause",
    response={200: schemas.ScheduleOut, **WRITE_ERRORS},
    url_name="schedule-pause",
    tags=["templates"],
)
def schedule_pause(request, schedule_id: int):
    """Stop launching until resumed."""
    link = _link(schedule_id)
    services.schedule_set_paused(link=link, paused=True, actor=actor(request))
    return _schedule(_link(schedule_id))


@router.post(
    "/schedules/{int:schedule_id}/resume",
    response={200: schemas.ScheduleOut, **WRITE_ERRORS},
    url_name="schedule-resume",
    tags=["templates"],
)
def schedule_resume(request, schedule_id: int):
    """Launch again on the schedule, from its next time."""
    link = _link(schedule_id)
    services.schedule_set_paused(link=link, paused=False, actor=actor(request))
    return _schedule(_link(schedule_id))
