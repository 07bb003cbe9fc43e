"""The Python API (spawner.api.ParallelSpawner): async and sync spellings, typed results equal to the
REST API's schemas, wall time that leaves the cluster's start-up out, and the README's example."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import re
import subprocess
import time
import typing

import pytest
from django.utils import timezone

from dashboard.api import schemas
from spawner import api_types, presets
from spawner.api import ParallelSpawner
from spawner.engine import cluster, lifecycle
from spawner.errors import SpecInvalid
from spawner.models import AgentType, WorkerHeartbeat
from tests.conftest import CLUSTER_ENV, ROOT, database_url_for_subprocess


@pytest.mark.integration
def test_the_summary_can_be_read_in_the_same_async_code_that_waited(cluster, agent_types, tmp_path):
    async def main():
        spawner = ParallelSpawner(tmp_path, max_parallel=3)
        await spawner.spawn_parallel(tasks=["echo one", "exit 1", "echo three"], agent_type="sh")
        waited = await spawner.wait_all(timeout=30)
        return waited, spawner.get_results_summary(), await spawner.aget_results_summary()

    waited, summary, awaited = asyncio.run(main())

    assert summary.failed == waited.failed == awaited.failed and len(summary.failed) == 1
    assert len(summary.succeeded) == 2
    assert summary.all_succeeded is False
    batch = summary.batches[0]
    assert isinstance(batch, api_types.BatchDetail) and isinstance(batch.timings, api_types.Timings)
    assert batch.status == "partial" and batch.counts == {"succeeded": 2, "failed": 1}
    assert {r.key: r.exit_code for r in batch.runs} == {"echo-one": 0, "exit-1": 1, "echo-three": 0}
    assert summary.cluster_startup_seconds is None  # the fixture's cluster was already running
    # What the REST API would answer for this batch validates against its schema as it is.
    schemas.BatchDetail.model_validate(batch.to_dict())
    assert batch.url == f"/api/batches/{batch.id}" and batch.runs[0].url.startswith("/api/runs/")
    # Older code that read the dictionaries keeps working.
    assert summary["batches"][0]["status"] == "partial" and summary["failed"] == summary.failed


@pytest.mark.integration
def test_every_method_has_a_sync_spelling(cluster, agent_types, tmp_path):
    spawner = ParallelSpawner(tmp_path, max_parallel=2)
    spawner.spawn_parallel_sync(tasks=["echo a", "echo b"], agent_type="sh")
    waited = spawner.wait_all_sync(timeout=30)

    assert waited.all_succeeded and sorted(waited.succeeded) == sorted(spawner.get_results_summary().succeeded)
    assert [r.output_tail.strip() for r in waited.batches[0].runs] == ["a", "b"]


@pytest.mark.integration
def test_the_sync_spellings_work_inside_an_event_loop_too(cluster, agent_types, tmp_path):
    async def main():
        spawner = ParallelSpawner(tmp_path)
        spawner.spawn_parallel_sync(tasks=["echo x"], agent_type="sh")
        return spawner.wait_all_sync(timeout=30)

    assert asyncio.run(main()).succeeded[0].endswith("/echo-x")


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (api_types.BatchDetail, schemas.BatchDetail),
        (api_types.RunSummary, schemas.RunSummary),
        (api_types.Timings, schemas.Timings),
    ],
)
def test_the_result_types_have_the_rest_apis_fields(ours, theirs):
    assert [f.name for f in dataclasses.fields(ours)] == list(theirs.model_fields)
    # and the same types, nested ones named alike (`list[RunSummary]`, `Timings`)
    hints = typing.get_type_hints(ours)
    for name, schema_field in theirs.model_fields.items():
        assert repr(hints[name]).replace("spawner.api_types.", "") == repr(schema_field.annotation).replace(
            "dashboard.api.schemas.", ""
        ), name


def _readme_python_api_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the README's Python API section has no python block"
    return blocks[0]


@pytest.mark.integration
def test_the_readme_example_runs_as_written(cluster, agent_types, tmp_path):
    shell = next(t for t in presets.AGENT_TYPES if t["name"] == "shell")  # the preset the example names
    AgentType.objects.get_or_create(name="shell", defaults={k: v for k, v in shell.items() if k != "name"})
    code = compile(_readme_python_api_block(), "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict = {"project_dir": tmp_path}

    async def main():
        result = eval(code, namespace)  # noqa: S307 - the project's own README
        if asyncio.iscoroutine(result):
            await asyncio.wait_for(result, 60)

    asyncio.run(main())

    summary = namespace["summary"]
    assert isinstance(summary, api_types.ResultsSummary)
    assert summary.failed == [f"{summary.batches[0].id}/exit-1"] and len(summary.succeeded) == 2  # as it says
    assert summary.batches[0].status == "partial"


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_cluster_started_for_the_batch_is_not_in_its_wall_time(
    transactional_db, agent_types, tmp_path, settings, monkeypatch
):
    """No cluster runs: the API starts the real one (`manage.py spawner_cluster`) and launches once it is ready."""
    _real_cluster_env(tmp_path, settings, monkeypatch)
    assert not WorkerHeartbeat.objects.exists()
    # Each echo sleeps a moment first, so parallelism shows above the few ms it takes to dispatch one.
    tasks = [f"sleep 0.5; echo {word}" for word in ("one", "two", "three")]

    async def main():
        spawner = ParallelSpawner(tmp_path, max_parallel=3)
        began = time.monotonic()
        await spawner.spawn_parallel(tasks=tasks, agent_type="sh")
        summary = await spawner.wait_all(timeout=90)
        return summary, time.monotonic() - began

    summary, elapsed = asyncio.run(main())

    assert summary.all_succeeded
    startup = summary.cluster_startup_seconds
    timings = summary.batches[0].timings
    assert startup is not None and 0 < startup < elapsed
    assert timings.wall_seconds < timings.sum_seconds  # three ran at once
    assert timings.speedup > 1
    assert timings.wall_seconds < 0.5 + startup  # one echo's time and a little, never the start-up too
    assert not WorkerHeartbeat.objects.exists()  # the cluster started here stopped


def _real_cluster_env(tmp_path, settings, monkeypatch) -> None:
    """What `ensure_cluster`'s own `manage.py spawner_cluster` needs to run on this test's database."""
    log_dir, workspace_dir = tmp_path / "logs", tmp_path / "workspaces"
    settings.SPAWNER = {**settings.SPAWNER, "LOG_DIR": log_dir, "WORKSPACE_DIR": workspace_dir}
    for name, value in {
        **CLUSTER_ENV,
        "DATABASE_URL": database_url_for_subprocess(),
        "SPAWNER_LOG_DIR": str(log_dir),
        "SPAWNER_WORKSPACE_DIR": str(workspace_dir),
    }.items():
        monkeypatch.setenv(name, value)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_cluster_killed_a_moment_ago_does_not_stop_a_new_one_from_starting(
    transactional_db, agent_types, tmp_path, settings, monkeypatch
):
    _real_cluster_env(tmp_path, settings, monkeypatch)
    dead = subprocess.Popen(["true"])  # noqa: S607 - its pid no longer exists once it has been waited for
    dead.wait()
    WorkerHeartbeat.objects.create(host=lifecycle.HOST, pid=dead.pid, workers=4, seen_at=timezone.now())
    assert not cluster.alive()

    spawner = ParallelSpawner(tmp_path)
    spawner.spawn_parallel_sync(tasks=["echo ran"], agent_type="sh")
    summary = spawner.wait_all_sync(timeout=60)

    assert summary.all_succeeded and summary.cluster_startup_seconds is not None


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_leaving_the_with_block_stops_the_cluster_started_there(
    transactional_db, agent_types, tmp_path, settings, monkeypatch
):
    _real_cluster_env(tmp_path, settings, monkeypatch)

    started = []

    async def main():
        async with ParallelSpawner(tmp_path) as spawner:
            await spawner.spawn_parallel(tasks=["sleep 30"], agent_type="sh")
            started.append(spawner._cluster)
            await spawner.wait_all(timeout=0.5)  # raises: the agent still runs

    with pytest.raises(TimeoutError):
        asyncio.run(main())

    assert started[0] is not None and started[0].poll() is not None  # the process it started has ended
    assert not WorkerHeartbeat.objects.exists()  # the cluster drained, handed the agent back and left
    assert not cluster.alive()


def test_a_bad_batch_is_refused_before_any_cluster_starts(agent_types, tmp_path, monkeypatch):
    def no_start(*args, **kwargs):
        raise AssertionError("a cluster was started for a batch that cannot launch")

    monkeypatch.setattr(cluster, "ensure_cluster", no_start)
    spawner = ParallelSpawner(tmp_path)

    with pytest.raises(SpecInvalid) as refused:
        spawner.spawn_parallel_sync(tasks=["echo x"], agent_type="no-such-agent")

    assert "no-such-agent" in str(refused.value) and spawner.batches == []
