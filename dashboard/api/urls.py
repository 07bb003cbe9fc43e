"""/api/ (the REST API, its schema and docs) and /tokens/ (a person's API tokens)."""

from __future__ import annotations

from django.urls import path
from django.views.generic import RedirectView

from dashboard import ids  # noqa: F401  (registers <id:...>)
from dashboard.api import problem_pages, tokens
from dashboard.api.main import api, docs_auth


def _api_urls():
    """The API answers a missing or bad token itself (a 401 problem), never with the sign-in redirect."""
    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        if pattern.name == "api-root":  # ninja's home page is a 404 outside DEBUG: show the docs
            pattern.callback = docs_auth(RedirectView.as_view(pattern_name="api-1:openapi-view"))
        pattern.callback.login_required = False
    return patterns, app_name, namespace


def _open_to_tokens(view):
    """Signed in or a token (else a 401 problem), like the API's own docs page."""
    wrapped = docs_auth(view)
    wrapped.login_required = False
    return wrapped


urlpatterns = [
    path("api/problems/", _open_to_tokens(problem_pages.problem_list), name="api-problems"),
    path("api/problems/<slug:slug>", _open_to_tokens(problem_pages.problem_detail), name="api-problem"),
    path("api/", _api_urls()),
    path("tokens/", tokens.token_list, name="tokens"),
    path("tokens/<id:token_id>/revoke/", tokens.token_revoke, name="token-revoke"),
    path("tokens/notifications/", tokens.personal_webhook, name="personal-webhook"),
]
