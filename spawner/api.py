"""The Python API: spawn tasks in parallel, wait, read a typed summary, from async or sync code.

    spawner = ParallelSpawner(project_dir)
    await spawner.spawn_parallel(tasks=["lint", "test"], agent_type="shell")
    summary = await spawner.wait_all()        # a ResultsSummary; partial failures are in it, not raised
    summary = spawner.get_results_summary()   # the same, read again (safe in async and sync code)

Sync code uses `spawn_parallel_sync` and `wait_all_sync`; async code may also `await
aget_results_summary()`, which never holds up the event loop. The results are dataclasses with the
REST API's fields (spawner.api_types). When no cluster is running, the first launch starts one and
waits until it is ready, so no batch's wall time includes the start-up (reported apart as
`summary.cluster_startup_seconds`). `wait_all` stops that cluster; so do `close()` / `await aclose()`,
and leaving `with ParallelSpawner(...)` / `async with ...`, for code that never gets to `wait_all`.

It goes through the same services as the browser and the CLI.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from asgiref.sync import sync_to_async
from django.db import connections

from spawner import selectors, services
from spawner.api_types import BatchDetail, ResultsSummary, RunSummary, Timings
from spawner.engine import cluster
from spawner.models import Batch
from spawner.states import BATCH_TERMINAL

__all__ = ["BatchDetail", "ParallelSpawner", "ResultsSummary", "RunSummary", "Timings"]

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
T = TypeVar("T")


def _task_dict(i: int, task: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(task, dict):
        return dict(task)
    key = _KEY_UNSAFE.sub("-", task).strip("-.")[:60] or f"task-{i}"
    return {"key": key if key[0].isalnum() else f"task-{i}", "prompt": task}


def _unique_keys(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same prompt twice (a race) gets keys `x`, `x-2`, ...; explicit keys stay as given."""
    seen: dict[str, int] = {}
    for task in tasks:
        key = task.get("key")
        if isinstance(key, str):
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > 1:
                task["key"] = f"{key}-{seen[key]}"
    return tasks


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run database work from sync code. Called where an event loop runs (Django refuses the ORM
    there), it runs in a thread of its own, with its own connection, closed after."""
    if not _in_event_loop():
        return fn(*args, **kwargs)
    out: dict[str, Any] = {}

    def work() -> None:
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller below
            out["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=work, name="spawner-api")
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def batch_detail(batch: Batch) -> BatchDetail:
    """A batch as the REST API's `GET /api/batches/{id}` answers it (selectors.batch_record)."""
    record = selectors.batch_record(batch)
    fields = {f.name for f in dataclasses.fields(BatchDetail)}
    return BatchDetail(
        **{
            **{k: v for k, v in record.items() if k in fields},
            "timings": Timings(**record["timings"]),
            "runs": [RunSummary(**r) for r in record["runs"]],
        }
    )


class ParallelSpawner:
    def __init__(
        self,
        project_dir: str | Path,
        *,
        max_parallel: int = 3,
        timeout: int = 1800,
        retries: int = 0,
        failure_policy: str = "continue",
        aggregation: str = "",
        owner=None,
        start_cluster: bool = True,
    ):
        self.project_dir = Path(project_dir).resolve()
        self.defaults = {
            "max_parallel": max_parallel,
            "timeout": timeout,
            "retries": retries,
            "failure_policy": failure_policy,
        }
        if aggregation:
            self.defaults["aggregation"] = aggregation
        self.owner = owner
        self.start_cluster = start_cluster
        self.batches: list[Batch] = []
        self.cluster_startup_seconds: float | None = None
        self._cluster = None

    # --- launch ------------------------------------------------------------------------------

    async def spawn_parallel(
        self, tasks: list[str | dict[str, Any]], agent_type: str, *, name: str | None = None
    ) -> Batch:
        """Launch one batch of `tasks` (prompts, or task dicts as in a spec). Raises SpecInvalid on bad input."""
        return await sync_to_async(self._spawn)(tasks, agent_type, name)

    def spawn_parallel_sync(
        self, tasks: list[str | dict[str, Any]], agent_type: str, *, name: str | None = None
    ) -> Batch:
        """`spawn_parallel` for sync code."""
        return _blocking(self._spawn, tasks, agent_type, name)

    def _spawn(self, tasks: list[str | dict[str, Any]], agent_type: str, name: str | None) -> Batch:
        data = {
            "name": name or f"{agent_type} x{len(tasks)}",
            "agent": agent_type,
            **self.defaults,
            "tasks": _unique_keys([_task_dict(i, t) for i, t in enumerate(tasks)]),
        }
        text = yaml.safe_dump(data, sort_keys=False)
        batch_spec = services.spec_load(text, is_admin=True)  # a bad spec fails before any cluster starts
        self._ensure_cluster()
        batch = services.batch_launch(
            batch_spec=batch_spec, base_dir=self.project_dir, owner=self.owner, spec_data=data, spec_text=text
        )
        self.batches.append(batch)
        return batch

    def _ensure_cluster(self) -> None:
        """Start a cluster when none is alive and return once it takes work: the batch launched next
        starts its clock then, and the start-up is kept apart."""
        if not self.start_cluster or self._cluster is not None:
            return
        began = time.monotonic()
        self._cluster = cluster.ensure_cluster()
        if self._cluster is not None:
            self.cluster_startup_seconds = round(time.monotonic() - began, 3)

    # --- wait --------------------------------------------------------------------------------

    async def wait_all(self, timeout: float | None = None, poll: float = 0.2) -> ResultsSummary:
        """Wait until every batch launched here has ended (stopping the cluster started here); the summary."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not await sync_to_async(self._all_ended)():
            if deadline is not None and loop.time() > deadline:
                raise TimeoutError(f"batches still running after {timeout} s")
            await asyncio.sleep(poll)
        await sync_to_async(self._stop_cluster)()
        return await self.aget_results_summary()

    def wait_all_sync(self, timeout: float | None = None, poll: float = 0.2) -> ResultsSummary:
        """`wait_all` for sync code."""
        return _blocking(self._wait, timeout, poll)

    def _wait(self, timeout: float | None, poll: float) -> ResultsSummary:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._all_ended():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"batches still running after {timeout} s")
            time.sleep(poll)
        self._stop_cluster()
        return self._summary()

    def _all_ended(self) -> bool:
        ids = [b.id for b in self.batches]
        return not Batch.objects.filter(id__in=ids).exclude(status__in=BATCH_TERMINAL).exists()

    def _stop_cluster(self) -> None:
        cluster.stop(self._cluster)
        self._cluster = None

    # --- stop the cluster started here, also when something went wrong before wait_all -----------

    def close(self) -> None:
        """Stop the cluster this spawner started, if any (it drains: running agents may finish)."""
        _blocking(self._stop_cluster)

    async def aclose(self) -> None:
        await sync_to_async(self._stop_cluster)()

    def __enter__(self) -> ParallelSpawner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ParallelSpawner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- read --------------------------------------------------------------------------------

    def get_results_summary(self) -> ResultsSummary:
        """Every batch launched here, as it stands now (safe in sync and async code)."""
        return _blocking(self._summary)

    async def aget_results_summary(self) -> ResultsSummary:
        """`get_results_summary` for async code, without holding up the event loop."""
        return await sync_to_async(self._summary)()

    def _summary(self) -> ResultsSummary:
        details = [batch_detail(b) for b in self.batches]
        return ResultsSummary(
            batches=details,
            succeeded=[f"{d.id}/{k}" for d in details for k in d.succeeded],
            failed=[f"{d.id}/{k}" for d in details for k in d.failed],
            all_succeeded=all(d.status == "succeeded" for d in details),
            cluster_startup_seconds=self.cluster_startup_seconds,
        )
