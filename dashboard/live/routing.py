"""Websocket routes; asgi.py wraps them in AllowedHostsOriginValidator(AuthMiddlewareStack(...))."""

from __future__ import annotations

from django.urls import path

from dashboard.live.consumers import LiveConsumer

websocket_urlpatterns = [
    path("ws/batches/", LiveConsumer.as_asgi(), {"kind": "list"}),
    path("ws/batches/<int:batch_id>/", LiveConsumer.as_asgi(), {"kind": "batch"}),
    path("ws/batches/<int:batch_id>/compare/", LiveConsumer.as_asgi(), {"kind": "compare"}),
    path("ws/batches/<int:batch_id>/result/", LiveConsumer.as_asgi(), {"kind": "result"}),
    path("ws/runs/<int:run_id>/", LiveConsumer.as_asgi(), {"kind": "run"}),
    path("ws/escalations/", LiveConsumer.as_asgi(), {"kind": "escalations"}),
    path("ws/site/", LiveConsumer.as_asgi(), {"kind": "site"}),
]
