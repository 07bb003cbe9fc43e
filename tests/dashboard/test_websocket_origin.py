"""Websockets open only from this server's own pages: scheme, host and port of the Origin must be
the request's (or a trusted origin), whatever the session cookie says."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.test import Client

from dashboard.live import relay
from dashboard.live.origin import same_origin
from spawner.asgi import application


def scope(origin: str | None, host: str | None, scheme: str = "ws") -> dict:
    headers = [(b"cookie", b"x")]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if host is not None:
        headers.append((b"host", host.encode()))
    return {"type": "websocket", "scheme": scheme, "headers": headers}


@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        ("http://localhost:8000", "localhost:8000", "ws"),
        ("http://127.0.0.1:8000", "127.0.0.1:8000", "ws"),
        ("http://localhost", "localhost", "ws"),
        ("http://localhost", "localhost:80", "ws"),
        ("https://localhost", "localhost", "wss"),
        ("http://[::1]:8000", "[::1]:8000", "ws"),
        ("HTTP://LOCALHOST:8000", "localhost:8000", "ws"),
    ],
)
def test_the_servers_own_origin_is_accepted(settings, origin, host, scheme):
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
    assert same_origin(scope(origin, host, scheme))


@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        ("http://localhost:9999", "localhost:8000", "ws"),  # another port on an allowed host
        ("http://localhost:8000", "localhost", "ws"),
        ("https://localhost:8000", "localhost:8000", "ws"),  # another scheme
        ("http://localhost", "localhost", "wss"),
        ("http://evil.example", "localhost", "ws"),
        ("http://evil.example", "evil.example", "ws"),  # a host that is not allowed (DNS rebinding)
        ("http://localhost.evil.example", "localhost", "ws"),
        ("null", "localhost", "ws"),
        ("file://", "localhost", "ws"),
        ("http://localhost:99999", "localhost:99999", "ws"),
        ("http://user@localhost", "localhost", "ws"),
        (None, "localhost", "ws"),
        ("http://localhost", None, "ws"),
    ],
)
def test_another_origin_is_refused(settings, origin, host, scheme):
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
    settings.CSRF_TRUSTED_ORIGINS = []
    assert not same_origin(scope(origin, host, scheme))


def test_a_trusted_origin_is_accepted_behind_a_proxy(settings):
    """TLS ends at the proxy: the app sees ws on port 8000, the browser is on https://spawner.example."""
    settings.ALLOWED_HOSTS = ["spawner.example"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://spawner.example", "https://*.team.example"]
    assert same_origin(scope("https://spawner.example", "127.0.0.1:8000"))
    assert same_origin(scope("https://spawner.example:443", "127.0.0.1:8000"))
    assert same_origin(scope("https://ci.team.example", "127.0.0.1:8000"))
    assert not same_origin(scope("http://spawner.example", "127.0.0.1:8000"))
    assert not same_origin(scope("https://spawner.example:8443", "127.0.0.1:8000"))
    assert not same_origin(scope("https://team.example.evil", "127.0.0.1:8000"))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("origin", "accepted"),
    [("http://localhost:8000", True), ("http://localhost:9999", False), ("https://localhost:8000", False)],
)
def test_an_admins_cookie_opens_a_websocket_only_from_the_same_origin(origin, accepted):
    from django.contrib.auth.models import User

    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw-root-12345"))
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    channel_layers.backends = {}

    async def connect():
        headers = [(b"origin", origin.encode()), (b"host", b"localhost:8000"), (b"cookie", cookie)]
        communicator = WebsocketCommunicator(application, "/ws/batches/", headers=headers)
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        live = relay.get_relay()
        live.topics.clear()
        if live.task:
            await live.task
        return connected

    assert async_to_sync(connect)() is accepted
    channel_layers.backends = {}
