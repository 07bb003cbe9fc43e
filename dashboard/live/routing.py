"""Websocket routes; asgi.py wraps them in the origin check and AuthMiddlewareStack(...)."""

from __future__ import annotations

from django.urls import path, re_path

from dashboard import ids  # noqa: F401  (registers <id:...>)
from dashboard.live.consumers import LiveConsumer, NotFoundConsumer

websocket_urlpatterns = [
    path("ws/batches/", LiveConsumer.as_asgi(), {"kind": "list"}),
    path("ws/batches/<id:batch_id>/", LiveConsumer.as_asgi(), {"kind": "batch"}),
    path("ws/batches/<id:batch_id>/compare/", LiveConsumer.as_asgi(), {"kind": "compare"}),
    path("ws/batches/<id:batch_id>/result/", LiveConsumer.as_asgi(), {"kind": "result"}),
    path("ws/runs/<id:run_id>/", LiveConsumer.as_asgi(), {"kind": "run"}),
    path("ws/escalations/", LiveConsumer.as_asgi(), {"kind": "escalations"}),
    path("ws/site/", LiveConsumer.as_asgi(), {"kind": "site"}),
    # Anything else (a mistyped path, an id out of range) is closed as not found, not a server error.
    re_path(r"", NotFoundConsumer.as_asgi()),
]
