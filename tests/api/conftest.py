"""Fixtures for the REST API: people (from the dashboard's fixtures), tokens, an API client."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from spawner import services
from tests.dashboard.conftest import (  # noqa: F401  (fixtures)
    admin,
    launcher,
    make_batch,
    member,
    reviewed,
    reviewer,
    teammate,
    viewer,
)
from tests.dashboard.test_merge_pages import nine, race  # noqa: F401  (fixtures: a merge queue, best of N)


class Api:
    """A client that speaks to /api/ with a token (or none)."""

    def __init__(self, token: str | None = None):
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str, **params):
        return self.client.get("/api" + path, params, headers=self.headers)

    def post(self, path: str, body=None, *, content_type="application/json", headers=None):
        data = json.dumps(body) if content_type == "application/json" and not isinstance(body, str | bytes) else body
        return self.client.post(
            "/api" + path,
            data if data is not None else "",
            content_type=content_type,
            headers={**self.headers, **(headers or {})},
        )


@pytest.fixture
def token_for(db):
    def make(user, scope: str = "launch", **kwargs) -> str:
        return services.token_create(user=user, name=f"{scope} token", scope=scope, **kwargs)[1]

    return make


@pytest.fixture
def api_as(token_for):
    def make(user=None, scope: str = "launch") -> Api:
        return Api(token_for(user, scope) if user is not None else None)

    return make
