"""MCP over streamable HTTP at /mcp, in the same ASGI app as the pages and the REST API.

Every request carries a personal API token (`Authorization: Bearer spn_…`, as for the REST API);
without a valid one it gets a 401 problem before the MCP transport sees it. The Host must be one of
ALLOWED_HOSTS, and a browser's Origin (when sent) the same host: a web page cannot reach it through
DNS rebinding. The transport is stateless (each POST is served on its own, with its progress
notifications on that POST's event stream), so any web process answers any request.

The MCP SDK's session manager needs a running task group; daphne sends no ASGI lifespan events, so
it is started by the first request, in the server's event loop, and kept for the process's life.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.http.request import split_domain_port, validate_host

from spawner.errors import problem_type
from spawner.mcp import tools

PATH = "/mcp"


def _identity(secret: str):
    close_old_connections()
    return tools.identity_from_token(secret)


async def _problem(send, status: int, detail: str, *, kind: str, title: str, headers=()) -> None:
    """A problem details answer whose `type` is the REST API's page for `kind` (`/api/problems/<kind>`)."""
    body = json.dumps(
        {"type": problem_type(kind), "title": title, "status": status, "detail": detail}, ensure_ascii=False
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _host_allowed(host: str) -> bool:
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


def _same_origin(origin: str, host: str) -> bool:
    if not origin:
        return True
    return urlsplit(origin).netloc.lower() == host.lower()


class McpEndpoint:
    """The ASGI app answering /mcp: token first, then the MCP SDK's streamable HTTP transport."""

    def __init__(self) -> None:
        self.server = tools.build_server(stateless_http=True)
        self.server.streamable_http_app()  # makes its session manager
        self.manager = self.server.session_manager
        self._ready: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None

    async def _started(self) -> None:
        if self._ready is None:  # no await since the test: one runner per process
            self._ready = asyncio.Event()
            self._runner = asyncio.get_running_loop().create_task(self._run(self._ready), name="mcp-sessions")
        await self._ready.wait()

    async def _run(self, ready: asyncio.Event) -> None:
        async with self.manager.run():
            ready.set()
            await asyncio.Event().wait()  # for the process's life

    async def __call__(self, scope, receive, send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if not _host_allowed(host):
            detail = f"the host {host!r} is not one this server answers"
            await _problem(send, 400, detail, kind="bad-request", title="Bad request")
            return
        if not _same_origin(headers.get("origin", ""), host):
            await _problem(
                send, 403, "requests from another origin are refused", kind="not-allowed", title="Not allowed"
            )
            return
        scheme, _, secret = headers.get("authorization", "").partition(" ")
        identity = None
        if scheme.lower() == "bearer" and secret.strip():
            identity = await sync_to_async(_identity, thread_sensitive=True)(secret.strip())
        if identity is None:
            await _problem(
                send,
                401,
                "send a personal API token as `Authorization: Bearer spn_…` (made on the tokens page)",
                kind="unauthenticated",
                title="Authentication required",
                headers=[(b"www-authenticate", b'Bearer realm="spawner"')],
            )
            return
        scope = {**scope, "spawner.identity": identity}
        await self._started()
        await self.manager.handle_request(scope, receive, send)


def with_mcp(django_app):
    """The HTTP app: /mcp to the MCP endpoint, everything else to Django."""
    endpoint = McpEndpoint()

    async def app(scope, receive, send):
        if scope["type"] == "http" and scope["path"].rstrip("/") == PATH:
            await endpoint(scope, receive, send)
        else:
            await django_app(scope, receive, send)

    app.mcp = endpoint
    return app
