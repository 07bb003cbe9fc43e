"""Nothing is reachable without signing in: every URL, every post, every websocket route."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.urls import URLPattern, URLResolver, get_resolver

from dashboard.live.routing import websocket_urlpatterns
from spawner.asgi import application

# Views that must answer strangers: signing in, and the admin's own sign-in.
PUBLIC = {"login", "logout", "admin:login"}


def walk(patterns, prefix="", namespace=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            ns = f"{p.namespace}:" if p.namespace else namespace
            yield from walk(p.url_patterns, prefix + str(p.pattern), ns)
        elif isinstance(p, URLPattern):
            yield namespace + (p.name or ""), prefix + str(p.pattern)


def concrete(route: str) -> str:
    """A URL for a pattern: path converters and regex groups filled with plausible values."""
    route = re.sub(r"<int:\w+>", "1", route)
    route = re.sub(r"<(?:\w+:)?\w+>", "x", route)
    route = re.sub(r"\(\?P<\w+>[^)]*\)", "1", route)
    return "/" + route.lstrip("^").rstrip("$").replace("\\", "")


ALL_URLS = sorted(set(walk(get_resolver().url_patterns)))


def test_the_url_conf_has_the_dashboard_pages():
    names = {name for name, _ in ALL_URLS}
    assert {"batch-list", "batch-new", "batch", "run", "compare", "run-log-download"} <= names
    assert {
        "batch-result",
        "batch-result-md",
        "batch-result-json",
        "batch-review",
        "escalations",
        "escalation-assign",
        "escalation-resolve",
    } <= names


def test_the_websocket_routes_include_the_fan_in_pages():
    assert {"/ws/site/", "/ws/escalations/", "/ws/batches/1/result/"} <= set(ws_routes())


@pytest.mark.parametrize(("name", "route"), [u for u in ALL_URLS if u[0] not in PUBLIC])
@pytest.mark.parametrize("method", ["get", "post"])
def test_every_url_sends_strangers_to_sign_in(client, db, name, route, method):
    response = getattr(client, method)(concrete(route))
    assert response.status_code in (302, 405), (name, route, response.status_code)
    if response.status_code == 302:
        assert "login" in response["Location"], (name, route, response["Location"])


def test_the_sign_in_page_is_open(client, db):
    assert client.get("/login/").status_code == 200


def test_posts_need_a_csrf_token(member, make_batch):
    from django.test import Client

    batch = make_batch(member)
    client = Client(enforce_csrf_checks=True)
    client.force_login(member)
    assert client.post(f"/batches/{batch.id}/cancel/").status_code == 403
    assert client.post("/batches/new/", {"source": "yaml", "spec_text": "x"}).status_code == 403
    assert client.post(f"/batches/{batch.id}/reviews/", {"decision": "approve"}).status_code == 403
    assert client.post("/escalations/1/resolve/", {"action": "accept"}).status_code == 403
    assert client.post("/escalations/1/assign/", {"assignee": ""}).status_code == 403


def ws_routes():
    for route in websocket_urlpatterns:
        yield concrete(str(route.pattern))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", list(ws_routes()))
def test_every_websocket_route_refuses_strangers(path):
    async def connect():
        communicator = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://localhost")])
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        return connected

    assert async_to_sync(connect)() is False


@pytest.mark.django_db(transaction=True)
def test_websockets_from_another_origin_are_refused(member):
    from django.test import Client

    client = Client()
    client.force_login(member)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()

    async def connect():
        communicator = WebsocketCommunicator(
            application, "/ws/batches/", headers=[(b"origin", b"http://evil.example"), (b"cookie", cookie)]
        )
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        return connected

    assert async_to_sync(connect)() is False
