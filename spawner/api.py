"""The Python API: spawn tasks in parallel, wait, read a summary.

    spawner = ParallelSpawner(project_dir)
    await spawner.spawn_parallel(tasks=["lint", "test"], agent_type="shell")
    await spawner.wait_all()
    summary = spawner.get_results_summary()   # partial failures are in it, not raised

It goes through the same services as the browser and the CLI.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import yaml
from asgiref.sync import sync_to_async

from spawner import selectors, services
from spawner.engine import cluster
from spawner.models import Batch
from spawner.states import BATCH_TERMINAL

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


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
        self._cluster = None

    async def spawn_parallel(
        self, tasks: list[str | dict[str, Any]], agent_type: str, *, name: str | None = None
    ) -> Batch:
        """Launch one batch of `tasks` (prompts, or task dicts as in a spec). Raises SpecInvalid on bad input."""
        data = {
            "name": name or f"{agent_type} x{len(tasks)}",
            "agent": agent_type,
            **self.defaults,
            "tasks": _unique_keys([_task_dict(i, t) for i, t in enumerate(tasks)]),
        }
        batch = await sync_to_async(self._launch)(data)
        self.batches.append(batch)
        return batch

    def _launch(self, data: dict[str, Any]) -> Batch:
        if self.start_cluster and self._cluster is None:
            self._cluster = cluster.ensure_cluster()
        text = yaml.safe_dump(data, sort_keys=False)
        batch_spec = services.spec_load(text, is_admin=True)
        return services.batch_launch(
            batch_spec=batch_spec, base_dir=self.project_dir, owner=self.owner, spec_data=data, spec_text=text
        )

    async def wait_all(self, timeout: float | None = None, poll: float = 0.2) -> dict[str, Any]:
        """Wait until every batch launched here has ended; return the summary."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not await sync_to_async(self._all_ended)():
            if deadline is not None and loop.time() > deadline:
                raise TimeoutError(f"batches still running after {timeout} s")
            await asyncio.sleep(poll)
        await sync_to_async(cluster.stop)(self._cluster)
        self._cluster = None
        return await sync_to_async(self.get_results_summary)()

    def _all_ended(self) -> bool:
        ids = [b.id for b in self.batches]
        return not Batch.objects.filter(id__in=ids).exclude(status__in=BATCH_TERMINAL).exists()

    def get_results_summary(self) -> dict[str, Any]:
        summaries = [selectors.batch_summary(b) for b in self.batches]
        return {
            "batches": summaries,
            "succeeded": [f"{s['batch']}/{k}" for s in summaries for k in s["succeeded"]],
            "failed": [f"{s['batch']}/{k}" for s in summaries for k in s["failed"]],
            "all_succeeded": all(s["status"] == "succeeded" for s in summaries),
        }
