"""What each problem type of the API means: the page its `type` URI points at
(`/api/problems/<slug>`, and the list at `/api/problems/`). Like the API's docs page it is for a
signed-in person or a token (else a 401 problem); `Accept: application/json` gets it as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.api.problems import problem


@dataclass(frozen=True)
class ProblemType:
    slug: str
    status: int
    title: str
    meaning: str
    what_to_do: str


TYPES = [
    ProblemType(
        "bad-request",
        400,
        "Bad request",
        "The request itself cannot be read: a body that is not UTF-8, a Content-Length that is not a number, "
        "a Last-Event-ID that is not an event id.",
        "Fix the request as `detail` says and send it again.",
    ),
    ProblemType(
        "unauthenticated",
        401,
        "Authentication required",
        "No token, or one that is unknown, revoked or expired (the answer carries WWW-Authenticate: Bearer).",
        "Make a token on the tokens page and send it as `Authorization: Bearer spn_…`.",
    ),
    ProblemType(
        "not-allowed",
        403,
        "Not allowed",
        "You may not do this: your permissions (launch, review, resolve, admin-only agent types, another "
        "person's template), your token's scope (`read` changes nothing; below `admin` you act as a non-admin), "
        "or a failed CSRF check on a browser session's write.",
        "Use a token of a wider scope, or ask an admin for the permission `detail` names.",
    ),
    ProblemType(
        "not-found",
        404,
        "Not found",
        "No such batch, run, escalation, template, schedule or API path (or a result not computed yet).",
        "Check the id; list what exists with the matching GET endpoint.",
    ),
    ProblemType(
        "method-not-allowed",
        405,
        "Method not allowed",
        "The path exists but not for this HTTP method; the Allow header lists those it takes.",
        "Send it with a method from Allow.",
    ),
    ProblemType(
        "refused",
        409,
        "Not applicable now",
        "The object is not in a state where this applies: cancelling an ended batch, retrying a run that "
        "succeeded, assigning a resolved escalation, a launch above the cost to confirm.",
        "Read the object again; `detail` says what state it is in (a launch: send confirm_cost=true).",
    ),
    ProblemType(
        "template-name-taken",
        409,
        "Template name taken",
        "You (or, for a global template, everyone) already have a template of this name.",
        "Choose another name, or change the existing template with PUT /api/templates/{id}.",
    ),
    ProblemType(
        "too-large",
        413,
        "Request too large",
        "The body is larger than the API reads (2 MiB; a spec may be at most 1 MB).",
        "Send a smaller spec.",
    ),
    ProblemType(
        "range",
        416,
        "Range not satisfiable",
        "The byte range asked of a run's output lies outside its log; `detail` gives the log's size.",
        "Ask for a range inside the log, a tail, or whole=true.",
    ),
    ProblemType(
        "unsupported-media-type",
        415,
        "Unsupported media type",
        "A spec was sent with a Content-Type the API does not read.",
        "Send it as application/json, application/yaml or text/plain.",
    ),
    ProblemType(
        "invalid",
        422,
        "Invalid request",
        "A parameter or a body field is missing or of the wrong kind; `errors` lists each with its "
        "`field`, where it was (`in`: query, body, path) and `message`.",
        "Fix each listed field.",
    ),
    ProblemType(
        "spec-invalid",
        422,
        "Invalid spec",
        "The batch spec cannot run; nothing was launched. `errors` lists every error as the new-batch form "
        "does: `task` (its key), `index`, `field`, `line` in the text, `message` and `where`.",
        "Fix every listed field (`manage.py spawn --plan` or POST /api/batches/plan checks without launching).",
    ),
    ProblemType(
        "template-invalid",
        422,
        "Invalid template",
        "A template, its variables, a schedule's cron expression or time zone, or the values given to its "
        "variables are wrong; `errors` names each field (name, variables, cron, timezone, a variable).",
        "Fix each listed field; cron is five fields (e.g. `0 3 * * 1-5`), timezone an IANA name (Europe/Paris).",
    ),
    ProblemType(
        "idempotency-key-reused",
        422,
        "Idempotency-Key reused",
        "The Idempotency-Key was used before by you with a different body: it names one launch only.",
        "Use a new key for a new launch; resend the same body to get the first launch's batch back.",
    ),
    ProblemType(
        "rate-limited",
        429,
        "Too many requests",
        "Too many requests in a short time; Retry-After says when to try again.",
        "Wait as long as Retry-After says, then send it again (the same Idempotency-Key for a launch).",
    ),
]
BY_SLUG = {t.slug: t for t in TYPES}


def _wants_json(request) -> bool:
    accept = request.headers.get("Accept", "")
    return "json" in accept and "text/html" not in accept


@require_GET
def problem_list(request):
    if _wants_json(request):
        return JsonResponse({"types": [asdict(t) for t in TYPES]})
    return render(request, "dashboard/problems.html", {"types": TYPES, "current": None})


@require_GET
def problem_detail(request, slug: str):
    found = BY_SLUG.get(slug)
    if found is None:
        return problem(404, f"no problem type {slug[:60]!r}: see /api/problems/")
    if _wants_json(request):
        return JsonResponse({**asdict(found), "type": request.path})
    return render(request, "dashboard/problems.html", {"types": TYPES, "current": found})
