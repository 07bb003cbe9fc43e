"""HTTP through Django, websockets through Channels: both require a signed-in user; /mcp is Spawner's MCP
server over streamable HTTP (spawner.mcp.http), which requires a personal API token."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "spawner.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from dashboard.live.origin import SameOriginValidator  # noqa: E402
from dashboard.live.routing import websocket_urlpatterns  # noqa: E402
from spawner.mcp.http import with_mcp  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": with_mcp(django_asgi_app),
        # Same origin only (scheme, host and port), then the session's user, then the routes (an
        # unknown path is closed as not found by the last route).
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
