"""Every problem `type` the API answers with is a page that explains it (for a session or a token)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from django.test import Client

from dashboard.api import problem_pages, problems
from spawner.mcp import http as mcp_http
from tests.api.conftest import Api

API_DIR = Path(problems.__file__).parent
MCP_DIR = Path(mcp_http.__file__).parent


def kinds_in_the_code(folder: Path = API_DIR) -> set[str]:
    """Every `kind="…"` (or `kind="a" if x else "b"`) in a folder's code (the REST API's, the MCP's)."""
    found = set()
    for source in folder.glob("*.py"):
        for line in source.read_text().splitlines():
            if "kind=" in line:
                found |= set(re.findall(r'"([a-z][a-z-]*)"', line.split("kind=", 1)[1]))
    return found


def test_every_type_the_api_uses_has_an_entry():
    kinds = kinds_in_the_code() | set(problems.SLUGS.values())
    assert {"spec-invalid", "template-invalid", "template-name-taken", "idempotency-key-reused", "range"} <= kinds
    assert kinds <= set(problem_pages.BY_SLUG), kinds - set(problem_pages.BY_SLUG)
    for t in problem_pages.TYPES:  # the entry's status is the status that type is answered with
        if t.slug in problems.SLUGS.values():
            assert problems.SLUGS[t.status] == t.slug


def test_a_problems_type_resolves_to_its_page(member, token_for, agent_types):
    api = Api(token_for(member, "read"))
    refused = api.post("/batches", "name: x\nagent: sh\ntasks: [{key: a}]", content_type="text/plain")
    assert json.loads(refused.content)["type"] == "/api/problems/not-allowed"  # a read token launches nothing
    assert api.client.get("/api/problems/not-allowed", headers=api.headers).status_code == 200
    for kind in ("spec-invalid", "not-found", "unauthenticated"):
        page = api.client.get(f"/api/problems/{kind}", headers=api.headers)
        assert page.status_code == 200 and problem_pages.BY_SLUG[kind].meaning in page.content.decode()
    as_json = api.client.get("/api/problems/spec-invalid", headers={**api.headers, "Accept": "application/json"})
    assert as_json.json()["status"] == 422 and as_json.json()["type"] == "/api/problems/spec-invalid"
    listed = api.client.get("/api/problems/", headers=api.headers).content.decode()
    assert all(f"/api/problems/{t.slug}" in listed for t in problem_pages.TYPES)
    missing = api.client.get("/api/problems/no-such-type", headers=api.headers)
    assert missing.status_code == 404 and missing["Content-Type"] == "application/problem+json"


def test_the_pages_want_a_session_or_a_token(member, client):
    stranger = Client().get("/api/problems/spec-invalid")
    assert stranger.status_code == 401 and stranger["Content-Type"] == "application/problem+json"
    assert stranger.json()["type"] == "/api/problems/unauthenticated"
    client.force_login(member)
    assert client.get("/api/problems/spec-invalid").status_code == 200


def test_every_type_the_mcp_endpoint_uses_has_an_entry():
    kinds = kinds_in_the_code(MCP_DIR)
    assert {"bad-request", "not-allowed", "unauthenticated"} <= kinds
    assert kinds <= set(problem_pages.BY_SLUG), kinds - set(problem_pages.BY_SLUG)


def mcp_answer(**headers: str) -> tuple[int, dict]:
    """What the /mcp endpoint answers a POST with these headers (in this process, no server)."""
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/mcp",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(mcp_http.McpEndpoint()(scope, receive, send))
    start, body = sent
    assert dict(start["headers"])[b"content-type"] == b"application/problem+json"
    return start["status"], json.loads(body["body"])


def test_the_mcp_endpoints_problems_resolve_to_the_same_pages_as_the_apis(member, client):
    """The MCP's `type` URIs are the REST API's (one function): each is a page that explains it."""
    answers = [
        mcp_answer(Host="attacker.example"),
        mcp_answer(Host="testserver", Origin="http://evil.example"),
        mcp_answer(Host="testserver"),
    ]
    assert [(status, body["type"]) for status, body in answers] == [
        (400, "/api/problems/bad-request"),
        (403, "/api/problems/not-allowed"),
        (401, "/api/problems/unauthenticated"),
    ]
    client.force_login(member)
    for status, body in answers:
        page = client.get(body["type"], headers={"Accept": "application/json"})
        assert page.status_code == 200, body["type"]
        assert page.json()["status"] == status and page.json()["title"] == body["title"]
