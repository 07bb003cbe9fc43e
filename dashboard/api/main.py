"""The API object: its authentication, its problem details, its schema and docs pages."""

from __future__ import annotations

from functools import wraps

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from dashboard.api import clusters, endpoints, merging
from dashboard.api.auth import SessionAuth, TokenAuth, request_user
from dashboard.api.limits import MAX_BODY_BYTES
from dashboard.api.problems import field_errors, problem
from spawner.errors import ActionRefused, NotAllowed, SpecInvalid
from spawner.services import IdempotencyConflict, TemplateInvalid, TemplateNameTaken


def docs_auth(view):
    """The schema and the docs page: for a signed-in person or a token, else a 401 problem."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if request_user(request) is None:
            return _unauthenticated()
        return view(request, *args, **kwargs)

    return wrapped


api = NinjaAPI(
    title="Spawner API",
    version="1",
    description="Launch batches of agents, follow them, retry, read the combined result, review, resolve "
    "escalations and work the merge queue. Authenticate with a personal token (`Authorization: Bearer spn_…`, "
    "made on the tokens page) or the browser's session. Errors are RFC 9457 problem details.",
    auth=[TokenAuth(), SessionAuth()],
    urls_namespace="api-1",
    docs_decorator=docs_auth,
)
api.add_router("/", endpoints.router)
api.add_router("/", clusters.router)  # the cluster registry (admins)
api.add_router("/", merging.router)  # the merge queue and best of N


def _unauthenticated():
    return problem(
        401,
        "send a personal API token as `Authorization: Bearer spn_…` (made on the tokens page), or sign in",
        headers={"WWW-Authenticate": 'Bearer realm="spawner"'},
    )


@api.exception_handler(AuthenticationError)
def on_unauthenticated(request, exc):
    return _unauthenticated()


@api.exception_handler(HttpError)
def on_http_error(request, exc: HttpError):
    return problem(exc.status_code, str(exc.message))


@api.exception_handler(ValidationError)
def on_invalid(request, exc: ValidationError):
    errors = []
    for e in exc.errors:
        loc = [str(part) for part in e.get("loc", ())]
        errors.append({"field": ".".join(loc[1:]) or ".".join(loc), "in": loc[0] if loc else "", "message": e["msg"]})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "the request is not valid"
    return problem(422, detail, errors=errors)


@api.exception_handler(SpecInvalid)
def on_spec_invalid(request, exc: SpecInvalid):
    count = len(exc.errors)
    return problem(
        422,
        f"the spec cannot run: {count} error{'s' if count != 1 else ''}; nothing was launched",
        kind="spec-invalid",
        title="Invalid spec",
        errors=field_errors(exc.errors),
    )


@api.exception_handler(TemplateInvalid)
def on_template_invalid(request, exc: TemplateInvalid):
    taken = isinstance(exc, TemplateNameTaken)
    return problem(
        409 if taken else 422,
        "; ".join(f"{e.field}: {e.message}" for e in exc.errors) or "the template is not valid",
        kind="template-name-taken" if taken else "template-invalid",
        title="Template name taken" if taken else "Invalid template",
        errors=field_errors(exc.errors),
    )


@api.exception_handler(NotAllowed)
def on_not_allowed(request, exc):
    return problem(403, str(exc))


@api.exception_handler(IdempotencyConflict)
def on_idempotency_conflict(request, exc):
    return problem(422, str(exc), kind="idempotency-key-reused", title="Idempotency-Key reused")


@api.exception_handler(ActionRefused)
def on_refused(request, exc):
    return problem(409, str(exc))


@api.exception_handler(PermissionDenied)
def on_denied(request, exc):
    return problem(403, str(exc) or "not allowed")


@api.exception_handler(Http404)
def on_not_found(request, exc):
    message = str(exc)
    if not message or message.startswith("No ") and "matches the given query" in message:
        message = "no such object"
    return problem(404, message)


@api.exception_handler(RequestDataTooBig)
def on_too_big(request, exc):
    return problem(413, f"the body is over {MAX_BODY_BYTES} bytes")
