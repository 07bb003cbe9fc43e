"""A clear 413 for an API request whose body is too large, before anything reads it."""

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
        return get_response(request)

    return middleware
