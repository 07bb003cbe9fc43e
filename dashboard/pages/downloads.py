"""File downloads with bounded memory: a log may be hundreds of megabytes.

Django serves a file response under ASGI by reading the whole file into a list first (it
consumes synchronous iterators eagerly), so the file is read here chunk by chunk, in a thread,
as an asynchronous iterator; the web server (`spawner.webserver`) asks for the next chunk only
once the client has taken the previous ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header

CHUNK_BYTES = 64 * 1024


async def file_chunks(source, size: int, chunk: int = CHUNK_BYTES, masker=None) -> AsyncIterator[bytes]:
    """The first `size` bytes of the log: a log that still grows is sent as it was when asked for.
    With a `masker`, each chunk passes through it (a secret split across chunks is still masked).
    A file is read in a thread of its own; live rows in the database on the thread its connection is on."""
    read = sync_to_async(source.read, thread_sensitive=source.kind == "live")
    try:
        offset = 0
        while offset < size:
            data = await read(offset, min(chunk, size - offset))
            if not data:
                break
            offset += len(data)
            if masker is not None:
                data = masker.feed(data)
            if data:
                yield data
        if masker is not None and (rest := masker.finish()):
            yield rest
    finally:
        await sync_to_async(source.close, thread_sensitive=source.kind == "live")()


def file_download(source, *, filename: str, content_type: str, masker=None) -> StreamingHttpResponse:
    """An opened log or diff (`selectors.log_open`) as it is now, streamed; the response closes it.
    Masked, its length is not known in advance (no Content-Length)."""
    size = source.size
    response = StreamingHttpResponse(file_chunks(source, size, masker=masker), content_type=content_type)
    if masker is None:
        response["Content-Length"] = str(size)
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response
