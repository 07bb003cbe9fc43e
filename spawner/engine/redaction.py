"""Keep a run's secrets out of what Spawner stores and shows.

The values of an agent type's named secrets (read from the server's environment, as at spawn
time) become `***` in output tails, results, errors, events, the aggregation and, once the
attempt has ended, the log file itself. `read_range` (and the selectors' log masker) mask a log
that is still being written, for "earlier output" and the download view. Values shorter than
masking.MIN_SECRET_LENGTH are not masked (see spawner.core.masking).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from spawner.core import masking

CHUNK_BYTES = 65_536


def secret_values(agent_type) -> list[str]:
    """The values to mask for runs of this agent type (its secrets, as the server has them now)."""
    names = [*(agent_type.secret_names or []), getattr(agent_type, "api_key_secret", "")]  # a model's key too
    return masking.usable(os.environ.get(name, "") for name in names if name)


def mask_json(value, secrets: Sequence[str]):
    return masking.mask_json(value, secrets)


def _hold(secrets: Sequence[bytes]) -> int:
    return max((len(s) for s in secrets), default=1) - 1


def read_range(path: Path, start: int, end: int, secrets: Sequence[str]) -> bytes:
    """Bytes [start, end) of a file, masked: a secret crossing either edge is masked too."""
    try:
        with open(path, "rb") as f:

            def read(offset: int, count: int) -> bytes:
                f.seek(offset)
                return f.read(count)

            return read_range_from(read, start, end, secrets)
    except FileNotFoundError:
        return b""


def read_range_from(read: Callable[[int, int], bytes], start: int, end: int, secrets: Sequence[str]) -> bytes:
    """Bytes [start, end) of what `read(offset, count)` reads (a file, a stored log), masked."""
    bsecrets = masking.as_bytes(secrets)
    hold = _hold(bsecrets)
    begin = max(0, start - hold)
    data = read(begin, max(0, end - begin + hold))
    return masking.mask_window(data, start - begin, end - begin, bsecrets)


def read_tail(path: Path, limit: int, secrets: Sequence[str]) -> str:
    """The last `limit` bytes of a log, masked, decoded so that binary or broken UTF-8 shows."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return ""
    data = read_range(path, max(0, size - limit), size, secrets)
    return data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def stream_file(path: Path, secrets: Sequence[str], chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """A file's bytes, masked, in chunks, in bounded memory (it may still be growing)."""
    masker = masking.StreamMasker(secrets)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            if out := masker.feed(chunk):
                yield out
    if out := masker.finish():
        yield out


def rewrite_file(path: Path, secrets: Sequence[str]) -> bool:
    """Mask a file in place (through a temporary copy, streaming). True if anything was masked."""
    if not secrets or not path.is_file():
        return False
    written = read = 0
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".masking")
    try:
        with os.fdopen(fd, "wb") as out:
            for piece in stream_file(path, secrets):
                out.write(piece)
                written += len(piece)
        read = path.stat().st_size
        if written == read:
            # Every mask is shorter than what it hides: the same length means nothing was found.
            os.unlink(temp)
            return False
        shutil.copymode(path, temp)
        os.replace(temp, path)
        return True
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
