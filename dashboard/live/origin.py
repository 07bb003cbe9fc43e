"""Websockets are same-origin only: a page elsewhere must not open one with a reader's cookies.

The Origin the browser sends must be this server as the browser reached it (scheme, host and port
of the request, the host being one of ALLOWED_HOSTS) or one of CSRF_TRUSTED_ORIGINS, which is how
a site behind a TLS-terminating proxy names its public origin. Channels' own
AllowedHostsOriginValidator compares the host only, so any port on an allowed host passed.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the default port filled in, or None for what is not an origin."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path or parts.query or parts.username:
        return None
    return parts.scheme, parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme]


def _allowed_hosts() -> list[str]:
    hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not hosts:
        return [".localhost", "127.0.0.1", "[::1]"]
    return hosts


def _trusted(raw: str, origin: tuple[str, str, int]) -> bool:
    for entry in settings.CSRF_TRUSTED_ORIGINS:
        if "*" in entry:
            # https://*.example.com, read as Django's CSRF check reads it.
            wanted = urlsplit(entry)
            if wanted.scheme == origin[0] and is_same_domain(urlsplit(raw).netloc, wanted.netloc.lstrip("*")):
                return True
        elif _origin(entry) == origin:
            return True
    return False


def same_origin(scope) -> bool:
    headers = dict(scope.get("headers") or [])
    raw_origin = headers.get(b"origin")
    if raw_origin is None:
        return False
    raw = raw_origin.decode("latin-1")
    origin = _origin(raw)
    if origin is None:
        return False
    if _trusted(raw, origin):
        return True
    host = headers.get(b"host", b"").decode("latin-1")
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, _allowed_hosts()):
        return False
    scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
    return _origin(f"{scheme}://{host}") == origin


class SameOriginValidator:
    """ASGI middleware: refuse the websocket handshake unless `same_origin(scope)`."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not same_origin(scope):
            denier = WebsocketDenier()
            return await denier(scope, receive, send)
        return await self.application(scope, receive, send)
