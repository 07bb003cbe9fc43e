"""Errors as RFC 9457 problem details: application/problem+json with type, title, status, detail."""

from __future__ import annotations

import json

from django.http import HttpResponse

from spawner.errors import FieldError, problem_type

CONTENT_TYPE = "application/problem+json"

TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Not applicable now",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Too many requests",
}
SLUGS = {
    400: "bad-request",
    401: "unauthenticated",
    403: "not-allowed",
    404: "not-found",
    405: "method-not-allowed",
    409: "refused",
    413: "too-large",
    415: "unsupported-media-type",
    422: "invalid",
    429: "rate-limited",
}


def problem(status: int, detail: str, *, kind: str = "", title: str = "", headers=None, **extra) -> HttpResponse:
    """A problem details response: `kind` names the problem type (default: from the status)."""
    body = {
        "type": problem_type(kind or SLUGS.get(status, "error")),
        "title": title or TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **extra,
    }
    response = HttpResponse(json.dumps(body, ensure_ascii=False), status=status, content_type=CONTENT_TYPE)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def field_errors(errors: list[FieldError]) -> list[dict]:
    """A spec's errors as the form shows them: each with its task, field, line and message."""
    return [e.as_data() for e in errors]
