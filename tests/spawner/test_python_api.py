"""The Python API (spawner.api.ParallelSpawner): async and sync spellings, typed results equal to the
REST API's schemas, wall time that leaves the cluster's start-up out, and the README's example."""

from __future__ import annotations

import asyncio

import pytest

from spawner.api import ParallelSpawner


@pytest.mark.integration
def test_the_summary_can_be_read_in_the_same_async_code_that_waited(cluster, agent_types, tmp_path):
    async def main():
        spawner = ParallelSpawner(tmp_path, max_parallel=3)
        await spawner.spawn_parallel(tasks=["echo one", "exit 1", "echo three"], agent_type="sh")
        waited = await spawner.wait_all(timeout=30)
        return waited, spawner.get_results_summary()

    waited, summary = asyncio.run(main())

    assert summary.failed == waited.failed and len(summary.failed) == 1
    assert len(summary.succeeded) == 2
    assert summary.batches[0].status == "partial"
