"""The web server: daphne, with backpressure on response bodies.

Daphne writes every body chunk an application sends straight into the Twisted transport, which
buffers whatever the client has not read yet. A slow reader of a big download makes the server
hold the whole file in memory. Here the application's `send` of a body chunk waits while the
connection's write buffer is full (Twisted's producer/consumer protocol tells us when), so a
download holds at most a few chunks per client, whatever the reader's speed.

Run it like daphne: `python -m spawner.webserver -b 127.0.0.1 -p 8000 spawner.asgi:application`
(`manage.py serve` does).
"""

from __future__ import annotations

import asyncio

from daphne.cli import CommandLineInterface
from daphne.http_protocol import WebRequest
from daphne.server import Server


class _Drain:
    """A push producer registered on one HTTP request: Twisted pauses it when the connection's
    write buffer is full and resumes it when the buffer has drained."""

    def __init__(self, request: WebRequest):
        self._writable = asyncio.Event()
        # The connection may already be waiting for the client before we register.
        if not getattr(request.channel, "_waitingForTransport", False):
            self._writable.set()
        request.registerProducer(self, True)
        # A lost connection must not leave the application waiting.
        request.notifyFinish().addBoth(self._release)

    def pauseProducing(self) -> None:
        self._writable.clear()

    def resumeProducing(self) -> None:
        self._writable.set()

    def stopProducing(self) -> None:
        self._writable.set()

    def _release(self, result):
        self._writable.set()
        return None  # the failure of a lost connection is expected; swallow it

    async def wait(self) -> None:
        await self._writable.wait()


class BackpressureServer(Server):
    """Daphne's server whose `send` for HTTP body chunks returns only once the client can take more."""

    async def handle_reply(self, protocol, message):
        if not isinstance(protocol, WebRequest) or message.get("type") != "http.response.body":
            return await super().handle_reply(protocol, message)
        drain = getattr(protocol, "_spawner_drain", None)
        if not message.get("more_body", False):
            # Last chunk: the request finishes inside handle_reply, its producer must be gone by then.
            if drain is not None and protocol.producer is drain and protocol.channel is not None:
                protocol.unregisterProducer()
            return await super().handle_reply(protocol, message)
        if drain is None and not protocol.finished and protocol.channel is not None:
            drain = protocol._spawner_drain = _Drain(protocol)
        await super().handle_reply(protocol, message)
        if drain is not None:
            await drain.wait()


class CommandLine(CommandLineInterface):
    server_class = BackpressureServer


if __name__ == "__main__":
    CommandLine.entrypoint()
