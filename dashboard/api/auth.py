"""Who is asking: a personal token (`Authorization: Bearer spn_…`) or the browser's session (with CSRF).

A token acts with its person's permissions, narrowed by its scope: `read` never changes anything,
`launch` may do what its person may except run admin-only agent types, `admin` everything its
person may.
"""

from __future__ import annotations

from django.http import HttpRequest
from ninja.errors import HttpError
from ninja.security import HttpBearer
from ninja.security.apikey import APIKeyCookie
from ninja.utils import check_csrf

from spawner import permissions, services
from spawner.models import ApiToken

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def scoped(user, scope: str):
    """The person as a token of this scope lets them act: below `admin`, never as staff (as for MCP)."""
    return permissions.token_acts_as(user, scope)


class TokenAuth(HttpBearer):
    """Authorization: Bearer <token>."""

    def authenticate(self, request: HttpRequest, token: str):
        found = services.token_user(token)
        if found is None:
            return None
        user, api_token = found
        if request.method not in SAFE_METHODS and api_token.scope == ApiToken.Scope.READ:
            raise HttpError(403, "this token's scope is read: it may not change anything")
        request.api_token = api_token
        return scoped(user, api_token.scope)


class SessionAuth(APIKeyCookie):
    """The browser's own calls: its session cookie, and the CSRF token on anything that changes."""

    param_name = "sessionid"

    def __init__(self) -> None:
        from django.conf import settings

        super().__init__(csrf=True)  # so the docs page sends the CSRF token with its requests
        self.param_name = settings.SESSION_COOKIE_NAME

    def _get_key(self, request: HttpRequest):
        # The CSRF check is done below, for a signed-in session only: a request with no session
        # at all is unauthenticated (401), not a CSRF failure.
        return request.COOKIES.get(self.param_name)

    def authenticate(self, request: HttpRequest, key):
        user = getattr(request, "user", None)
        if not key or user is None or not user.is_authenticated or not user.is_active:
            return None
        if request.method not in SAFE_METHODS and check_csrf(request) is not None:
            raise HttpError(403, "CSRF check failed: send the X-CSRFToken header with the session's token")
        request.api_token = None
        return user


def request_user(request: HttpRequest):
    """Session or token: the person (as their token lets them act), or None. For the schema and docs."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_active:
        return user
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() == "bearer" and (found := services.token_user(secret.strip())):
        return scoped(found[0], found[1].scope)
    return None
