"""File downloads with bounded memory: a log may be hundreds of megabytes.

Django serves a file response under ASGI by reading the whole file into a list first (it
consumes synchronous iterators eagerly), so the file is read here chunk by chunk, in a thread,
as an asynchronous iterator; the web server (`spawner.webserver`) asks for the next chunk only
once the client has taken the previous ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header

CHUNK_BYTES = 64 * 1024


async def file_chunks(path: Path, size: int, chunk: int = CHUNK_BYTES, masker=None) -> AsyncIterator[bytes]:
    """The first `size` bytes of the file: a log that still grows is sent as it was when asked for.
    With a `masker`, each chunk passes through it (a secret split across chunks is still masked)."""
    f = await sync_to_async(open, thread_sensitive=False)(path, "rb")
    try:
        left = size
        while left > 0:
            data = await sync_to_async(f.read, thread_sensitive=False)(min(chunk, left))
            if not data:
                break
            left -= len(data)
            if masker is not None:
                data = masker.feed(data)
            if data:
                yield data
        if masker is not None and (rest := masker.finish()):
            yield rest
    finally:
        f.close()


def file_download(path: Path, *, filename: str, content_type: str, masker=None) -> StreamingHttpResponse:
    """The file as it is now; masked, its length is not known in advance (no Content-Length)."""
    size = path.stat().st_size
    response = StreamingHttpResponse(file_chunks(path, size, masker=masker), content_type=content_type)
    if masker is None:
        response["Content-Length"] = str(size)
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response
