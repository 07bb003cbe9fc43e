"""A clear 413 for an API request whose body is too large, before anything reads it; problem
details, not HTML pages, for an unknown API path (404) or a wrong method (405)."""

from __future__ import annotations

from dashboard.api.problems import problem

MAX_BODY_BYTES = 2 * 1024 * 1024  # more than a spec may be (1 MB)


def body_limit(get_response):
    """Refuse an API request whose declared body is too large before anything reads it."""

    def middleware(request):
        if request.path.startswith("/api/"):
            try:
                length = int(request.headers.get("Content-Length") or 0)
            except ValueError:
                return problem(400, "Content-Length is not a number")
            if length > MAX_BODY_BYTES:
                return problem(413, f"the body is {length} bytes; at most {MAX_BODY_BYTES}")
        response = get_response(request)
        html = not response.get("Content-Type", "").startswith("application/")
        if request.path.startswith("/api/") and response.status_code == 405 and html:
            allowed = response.get("Allow", "")
            return problem(405, f"{request.method} is not allowed here; use {allowed}", headers={"Allow": allowed})
        if request.path.startswith("/api/") and response.status_code == 404 and html:
            return problem(404, f"no API endpoint at {request.path}: see /api/docs")
        return response

    return middleware
