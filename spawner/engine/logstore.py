"""Where an attempt's full output is kept, and the one way every server reads it.

An agent writes its log (and its result, prompt, stderr ranges, diff) under SPAWNER_LOG_DIR on the
machine that runs it. Two shapes:

- one machine (SPAWNER_LOG_STORAGE unset): the files stay there; readers open them in place through
  a FileSystemStorage over their folder, and nothing is copied;
- several machines (a storage configured, `settings.STORAGES["spawner_logs"]`: a shared directory or
  any django-storages backend such as S3): while the attempt runs, its worker appends the new output,
  masked, to `LogChunk` rows on each output tick, so every web process reads the live log from the
  database; when the attempt ends its files, masked, are saved to the storage and the rows removed.

`open_log` gives a reader over whichever holds the attempt's bytes now: ranges, never the whole
file in memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.db.models import Max

from spawner.core import masking
from spawner.engine import redaction
from spawner.models import LogChunk, RunAttempt
from spawner.states import AttemptStatus

log = logging.getLogger(__name__)

# The files of one attempt that are kept: `<key>.<n><suffix>` in `batch-<id>/`.
SUFFIXES = (".log", ".stderr", ".result.json", ".prompt.txt", ".diff", ".deps.json", ".usage.json")
CHUNK_ROW_BYTES = 1024 * 1024  # one LogChunk row holds at most this much
TICK_MAX_BYTES = 4 * 1024 * 1024  # read from the log file per output tick at most (bounded memory)


def conf(name: str):
    return settings.SPAWNER[name]


def shared() -> bool:
    """Whether finished logs go to a configured storage (several machines) rather than stay put."""
    return bool(conf("LOG_STORAGE"))


def storage() -> Storage:
    """The storage finished logs are kept in (several machines only)."""
    return storages[conf("LOG_STORAGE")]


def name(attempt: RunAttempt, suffix: str = ".log") -> str:
    """The name of one of an attempt's files in the storage."""
    run = attempt.run
    return f"batch-{run.batch_id}/{run.key}.{attempt.number}{suffix}"


def local_path(attempt: RunAttempt, suffix: str = ".log") -> Path | None:
    """Where the worker wrote one of the attempt's files on its own disk (None before it started)."""
    if not attempt.log_path:
        return None
    path = Path(attempt.log_path)
    return path if suffix == ".log" else path.with_name(path.name.removesuffix(".log") + suffix)


# --- writing: the worker's side ------------------------------------------------------------------


@dataclass
class _Live:
    raw: int = 0  # bytes of the local log already read
    kept: int = 0  # bytes (masked) already in LogChunk rows
    pending: bytes = b""  # masked bytes a failed write did not store
    masker: masking.StreamMasker | None = None


_LIVE: dict[int, _Live] = {}
_WITH_ROWS: set[int] = set()  # attempts whose log this process stored: their live rows go next


def publish_live(attempt: RunAttempt, log_path: Path, secrets: list[str]) -> int:
    """Append what the agent printed since the last tick, masked, to the attempt's LogChunk rows (several
    machines only). Returns the bytes added; bounded per tick and per attempt (LIVE_LOG_MAX_BYTES)."""
    if not shared():
        return 0
    live = _LIVE.setdefault(attempt.id, _Live(masker=masking.StreamMasker(secrets)))
    room = conf("LIVE_LOG_MAX_BYTES") - live.kept
    if room <= 0:
        return 0
    try:
        with open(log_path, "rb") as f:
            f.seek(live.raw)
            data = f.read(min(TICK_MAX_BYTES, room))
    except OSError:
        return 0
    live.raw += len(data)
    # What a failed write could not store goes first next time: the rows stay contiguous.
    out, live.pending = live.pending + (live.masker.feed(data) if data else b""), b""
    rows, kept = [], live.kept
    for at in range(0, len(out), CHUNK_ROW_BYTES):
        piece = out[at : at + CHUNK_ROW_BYTES]
        rows.append(LogChunk(attempt_id=attempt.id, start=kept, end=kept + len(piece), data=piece))
        kept += len(piece)
    if rows:
        try:
            LogChunk.objects.bulk_create(rows)
        except Exception:
            live.pending = out
            raise
    live.kept = kept
    return len(out)


def store_attempt(attempt: RunAttempt, secrets: list[str], base: Path | None = None) -> list[str]:
    """Mask the attempt's files in place and save them to the storage, replacing any earlier copy;
    the live rows stay until `forget_live` (a reader between the two still finds the output).
    Returns the names saved. Nothing to do on one machine: the files are where readers look."""
    _LIVE.pop(attempt.id, None)
    if not shared():
        return []
    target = storage()
    base = base or local_path(attempt)
    if base is None:
        return []
    saved = []
    for suffix in SUFFIXES:
        path = base if suffix == ".log" else base.with_name(base.name.removesuffix(".log") + suffix)
        if not path.is_file():
            continue
        key = name(attempt, suffix)
        try:
            if suffix != ".stderr":  # byte ranges, no text
                redaction.rewrite_file(path, secrets)
            if target.exists(key):
                target.delete(key)
            with open(path, "rb") as f:
                got = target.save(key, File(f, name=path.name))
        except Exception:  # noqa: BLE001 - a storage outage must not stop the attempt's end being recorded
            log.exception("attempt %s: could not store %s", attempt.id, key)
            continue
        if got != key:
            log.warning("attempt %s: the storage kept %s as %s", attempt.id, key, got)
        saved.append(got)
        if suffix == ".log":
            # Its live rows (any worker's: this may be the reaper or a draining cluster) go once the
            # whole log is stored; a log not stored here keeps them, the only copy then.
            _WITH_ROWS.add(attempt.id)
    return saved


def forget_live(attempt_id: int) -> None:
    """Drop the live rows of an attempt whose files are stored (no statement when it wrote none)."""
    if attempt_id in _WITH_ROWS:
        _WITH_ROWS.discard(attempt_id)
        LogChunk.objects.filter(attempt_id=attempt_id).delete()


# --- reading: every web process, any machine -----------------------------------------------------


@dataclass
class LogSource:
    """An attempt's file as it is now: `size` bytes, read by range. `key` and `version` tell a cached
    line index whether it still describes these bytes."""

    kind: str  # "file" (in place), "stored" (the storage) or "live" (LogChunk rows)
    key: str
    version: object
    size: int
    read: Callable[[int, int], bytes]
    _close: Callable[[], None] = field(default=lambda: None, repr=False)

    def close(self) -> None:
        self._close()


def _from_s3(target: Storage, key: str, kind: str) -> LogSource | None:
    """An S3-compatible storage (django-storages' S3Storage) read by HTTP range requests: its own
    File would download the whole object first."""
    from botocore.exceptions import BotoCoreError, ClientError
    from storages.utils import clean_name

    obj = target.bucket.Object(target._normalize_name(clean_name(key)))
    try:
        size = obj.content_length  # one HEAD request
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            log.warning("log storage: could not open %s", key, exc_info=True)
        return None
    except BotoCoreError:
        log.warning("log storage: could not open %s", key, exc_info=True)
        return None

    def read(offset: int, count: int) -> bytes:
        stop = min(offset + count, size)
        if stop <= offset:
            return b""
        try:
            return obj.get(Range=f"bytes={offset}-{stop - 1}", IfMatch=obj.e_tag)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise OSError(f"log storage: reading {key}: {exc}") from exc

    return LogSource(kind, f"{kind}:s3:{target.bucket.name}:{key}", obj.e_tag, size, read)


def _from_storage(target: Storage, key: str, kind: str) -> LogSource | None:
    if hasattr(target, "bucket") and type(target).__module__.startswith("storages.backends.s3"):
        return _from_s3(target, key, kind)
    try:
        f = target.open(key, "rb")
    except (FileNotFoundError, IsADirectoryError, PermissionError, ValueError, SuspiciousFileOperation):
        return None
    except OSError:
        log.warning("log storage: could not open %s", key, exc_info=True)
        return None
    try:
        size = f.size
        version: object = "stored"
        with contextlib.suppress(AttributeError, NotImplementedError, OSError, ValueError):
            version = os.fstat(f.fileno()).st_ino  # a file masked in place at the end is a new inode
    except OSError:
        f.close()
        return None

    def read(offset: int, count: int) -> bytes:
        f.seek(offset)
        return f.read(count)

    return LogSource(kind, f"{kind}:{getattr(target, 'location', '')}:{key}", version, size, read, f.close)


def _from_rows(attempt_id: int) -> LogSource | None:
    size = LogChunk.objects.filter(attempt_id=attempt_id).aggregate(end=Max("end"))["end"]
    if size is None:
        return None

    def read(offset: int, count: int) -> bytes:
        stop = min(offset + count, size)
        if stop <= offset:
            return b""
        rows = list(
            LogChunk.objects.filter(
                attempt_id=attempt_id, start__lt=stop, start__gt=offset - CHUNK_ROW_BYTES, end__gt=offset
            )
            .order_by("start")
            .values_list("start", "data")
        )
        if not rows:
            return b""
        begin = rows[0][0]
        return b"".join(bytes(data) for _, data in rows)[offset - begin : stop - begin]

    return LogSource("live", f"live:{attempt_id}", "live", size, read)


def open_log(attempt: RunAttempt | None, suffix: str = ".log") -> LogSource | None:
    """A reader over one of the attempt's files, wherever it is now, or None when none holds it.
    The caller closes it."""
    if attempt is None:
        return None
    if not shared():
        path = local_path(attempt, suffix)
        if path is None:
            return None
        return _from_storage(FileSystemStorage(location=path.parent), path.name, "file")
    if attempt.status not in (AttemptStatus.QUEUED, AttemptStatus.RUNNING):
        found = _from_storage(storage(), name(attempt, suffix), "stored")
        if found is not None:
            return found
    return _from_rows(attempt.id) if suffix == ".log" else None


@contextlib.contextmanager
def opened(attempt: RunAttempt | None, suffix: str = ".log") -> Iterator[LogSource | None]:
    source = open_log(attempt, suffix)
    try:
        yield source
    finally:
        if source is not None:
            source.close()
