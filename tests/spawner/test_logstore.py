"""engine.logstore: live output as masked rows, finished files to the storage, one reader over both."""

from __future__ import annotations

import pytest

from spawner.engine import logstore
from spawner.models import LogChunk, RunAttempt
from tests.spawner.helpers import launch

SECRET = "split-across-ticks-secret"
SPEC = """
name: logstore
agent: sh
tasks:
  - key: one
    prompt: echo hi
"""


@pytest.fixture
def attempt(db, agent_types, tmp_path, settings):
    settings.SPAWNER = {**settings.SPAWNER, "LOG_DIR": tmp_path / "local"}
    batch = launch(SPEC, tmp_path)
    attempt = RunAttempt.objects.select_related("run__agent_type").get(run__batch=batch)
    path = tmp_path / "local" / f"batch-{batch.id}" / "one.1.log"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    RunAttempt.objects.filter(id=attempt.id).update(status="running", log_path=str(path))
    attempt.refresh_from_db()
    yield attempt
    logstore._LIVE.pop(attempt.id, None)


@pytest.fixture
def shared(settings, tmp_path):
    settings.SPAWNER = {**settings.SPAWNER, "LOG_STORAGE": "spawner_logs"}
    settings.STORAGES = {
        **settings.STORAGES,
        "spawner_logs": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "store")},
        },
    }
    return tmp_path / "store"


def _append(attempt, data: bytes) -> None:
    with open(attempt.log_path, "ab") as f:
        f.write(data)


def _read_all(attempt) -> tuple[str, bytes]:
    with logstore.opened(attempt) as source:
        return source.kind, source.read(0, source.size)


def test_live_rows_are_masked_across_ticks_and_read_by_any_range(attempt, shared, monkeypatch):
    monkeypatch.setattr(logstore, "CHUNK_ROW_BYTES", 7)  # many rows: ranges cross them
    pieces = [b"start ", SECRET[:10].encode(), SECRET[10:].encode() + b" middle\n", b"x" * 40, b"\nend\n"]
    for piece in pieces:
        _append(attempt, piece)
        logstore.publish_live(attempt, logstore.local_path(attempt), [SECRET])
    assert LogChunk.objects.filter(attempt=attempt).count() > 5
    whole = b"start *** middle\n" + b"x" * 40 + b"\nend\n"
    kind, data = _read_all(attempt)
    assert kind == "live" and whole.startswith(data) and len(data) >= len(whole) - len(SECRET)
    assert not any(SECRET[:10].encode() in bytes(row) for row in LogChunk.objects.values_list("data", flat=True))
    with logstore.opened(attempt) as source:
        for start in range(0, source.size, 5):
            for count in (1, 6, 13, 100):
                assert source.read(start, count) == data[start : start + count], (start, count)


def test_live_output_stops_at_its_cap(attempt, shared, settings):
    settings.SPAWNER = {**settings.SPAWNER, "LIVE_LOG_MAX_BYTES": 1000}
    _append(attempt, b"a" * 5000)
    logstore.publish_live(attempt, logstore.local_path(attempt), [])
    _append(attempt, b"b" * 5000)
    assert logstore.publish_live(attempt, logstore.local_path(attempt), []) == 0
    assert _read_all(attempt) == ("live", b"a" * 1000)


def test_the_finished_files_are_stored_masked_and_read_from_the_storage(attempt, shared):
    _append(attempt, f"out {SECRET}\n".encode())
    logstore.publish_live(attempt, logstore.local_path(attempt), [SECRET])
    logstore.local_path(attempt, ".result.json").write_text(f'{{"k": "{SECRET}"}}')
    names = logstore.store_attempt(attempt, [SECRET], logstore.local_path(attempt))
    run = attempt.run
    assert sorted(names) == [f"batch-{run.batch_id}/one.1.log", f"batch-{run.batch_id}/one.1.result.json"]
    assert (shared / names[0]).read_bytes() == b"out ***\n"
    assert SECRET not in (shared / names[1]).read_text()
    RunAttempt.objects.filter(id=attempt.id).update(status="succeeded")
    attempt.refresh_from_db()
    assert _read_all(attempt) == ("stored", b"out ***\n")
    logstore.forget_live(attempt.id)
    assert not LogChunk.objects.filter(attempt=attempt).exists()
    logstore.local_path(attempt).unlink()  # the worker's disk is not needed any more
    assert _read_all(attempt) == ("stored", b"out ***\n")
    assert logstore.open_log(attempt, ".diff") is None


def test_a_stored_copy_replaces_an_earlier_one(attempt, shared):
    _append(attempt, b"first\n")
    logstore.store_attempt(attempt, [], logstore.local_path(attempt))
    _append(attempt, b"second\n")
    assert logstore.store_attempt(attempt, [], logstore.local_path(attempt)) == [
        f"batch-{attempt.run.batch_id}/one.1.log"
    ]
    assert sorted(p.name for p in (shared / f"batch-{attempt.run.batch_id}").iterdir()) == ["one.1.log"]


def test_on_one_machine_nothing_is_copied_and_the_file_is_read_in_place(attempt, tmp_path):
    _append(attempt, b"here\n")
    assert logstore.publish_live(attempt, logstore.local_path(attempt), []) == 0
    assert logstore.store_attempt(attempt, [], logstore.local_path(attempt)) == []
    assert not LogChunk.objects.exists()
    assert _read_all(attempt) == ("file", b"here\n")
    assert logstore.open_log(attempt, ".stderr") is None


def test_an_s3_compatible_storage_is_read_by_ranges(attempt, settings, monkeypatch):
    """django-storages' S3Storage against moto's in-process S3: the stored log is read by HTTP
    range requests (never the whole object), and a missing one is no log."""
    moto = pytest.importorskip("moto", reason="moto and django-storages[s3] are not installed (optional)")
    pytest.importorskip("storages.backends.s3", reason="django-storages[s3] is not installed (optional)")
    import boto3

    for name, value in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with moto.mock_aws():
        boto3.client("s3").create_bucket(Bucket="spawner-logs")
        settings.SPAWNER = {**settings.SPAWNER, "LOG_STORAGE": "spawner_logs"}
        settings.STORAGES = {
            **settings.STORAGES,
            "spawner_logs": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {"bucket_name": "spawner-logs"}},
        }
        data = b"".join(f"line {i} {SECRET}\n".encode() for i in range(20_000))
        _append(attempt, data)
        assert logstore.store_attempt(attempt, [SECRET], logstore.local_path(attempt)) == [
            f"batch-{attempt.run.batch_id}/one.1.log"
        ]
        RunAttempt.objects.filter(id=attempt.id).update(status="succeeded")
        attempt.refresh_from_db()
        masked = data.replace(SECRET.encode(), b"***")
        ranges = []
        with logstore.opened(attempt) as source:
            assert source.kind == "stored" and source.size == len(masked)
            real_read = source.read

            def counting(offset, count):
                ranges.append(count)
                return real_read(offset, count)

            source.read = counting
            assert source.read(123_456, 50) == masked[123_456:123_506]
            assert source.read(len(masked) - 5, 100) == masked[-5:]
        assert ranges == [50, 100]
        from spawner import selectors

        assert [line.text for line in selectors.log_lines(attempt, 19_999, 20_000)] == [
            "line 19998 ***",
            "line 19999 ***",
        ]
        assert selectors.log_search(attempt, "line 12345 ").hits[0].number == 12_346
        assert logstore.open_log(attempt, ".diff") is None
