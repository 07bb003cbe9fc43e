"""One websocket consumer for every live page: join the topic's group, send a snapshot, relay fragments."""

from __future__ import annotations

from urllib.parse import parse_qsl

from autobahn.exception import Disconnected
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import DataError

from dashboard.live import topics
from dashboard.live.relay import get_relay

# Close codes: 4400/4401/4404 tell the htmx ws extension not to retry (it retries 1006, 1011-1013;
# dashboard.js adds 1001 and 1005).
BAD_REQUEST = 4400
NOT_SIGNED_IN = 4401
NOT_FOUND = 4404
SERVICE_RESTART = 1012


class Refusing(AsyncWebsocketConsumer):
    async def refuse(self, code: int) -> None:
        """Accept, then close with `code`: a handshake refused before accepting reaches the browser
        as 1006, which the page would retry for ever."""
        await self.accept()
        await self.close(code=code)

    def signed_in(self) -> bool:
        user = self.scope.get("user")
        return user is not None and user.is_authenticated


class NotFoundConsumer(Refusing):
    """Every websocket path no route knows."""

    async def connect(self):
        await self.refuse(NOT_FOUND if self.signed_in() else NOT_SIGNED_IN)


class LiveConsumer(Refusing):
    """Kind of page from the route (`list`, `batch`, `run`, `compare`, `result`, `escalations`, or the
    `site` header); what to watch from the URL."""

    topic: topics.Topic | None = None

    async def connect(self):
        if not self.signed_in():
            await self.refuse(NOT_SIGNED_IN)
            return
        route = self.scope["url_route"]["kwargs"]
        query = dict(parse_qsl(self.scope.get("query_string", b"").decode("latin-1")))
        kwargs = {k: v for k, v in route.items() if k != "kind"}
        try:
            topic = await database_sync_to_async(topics.topic_for)(route["kind"], kwargs, query, self.scope["user"])
        except (ValueError, OverflowError, DataError):
            # Input the database cannot take: the same URL would fail again, so no retry.
            await self.refuse(BAD_REQUEST)
            return
        if topic is None:
            await self.refuse(NOT_FOUND)
            return
        await self.accept()
        self.relay = get_relay()
        self.topic = await self.relay.watch(topic, self.channel_name)
        # Every (re)connect starts from the current state, so nothing missed while away matters.
        try:
            for html in await self.relay.snapshot(self.topic):
                await self.send(text_data=html)
        except Disconnected:
            pass  # the reader left the page while its snapshot was being made: nothing to tell

    async def disconnect(self, code):
        if self.topic is not None:
            await self.relay.unwatch(self.topic, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        """The pages only listen; anything a client sends is ignored."""

    async def live_fragment(self, event):
        await self.send(text_data=event["html"])

    async def live_close(self, event):
        await self.close(code=event.get("code", SERVICE_RESTART))
