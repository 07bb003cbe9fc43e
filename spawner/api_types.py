"""What the Python API answers: the same fields as the REST API's schemas (a test keeps them equal).

Each result reads as attributes (`summary.failed`, `batch.timings.wall_seconds`) and, for code written
against the older dictionaries, by key (`summary["failed"]`); `to_dict()` gives plain data (JSON-ready
once its datetimes are turned into text).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class _Readable:
    def __getitem__(self, name: str) -> Any:
        if name not in {f.name for f in dataclasses.fields(self)}:  # type: ignore[arg-type]
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class Timings(_Readable):
    """A batch's figures (spawner.core.timings): wall is busy time, `speedup` its parallelism (work / wall)."""

    wall_seconds: float | None
    since_launch_seconds: float | None
    idle_seconds: float | None
    sum_seconds: float | None
    critical_path_seconds: float | None
    speedup: float | None
    parallelism: float | None
    efficiency: float | None


@dataclass(frozen=True)
class RunSummary(_Readable):
    id: int
    key: str
    agent_type: str
    priority: str
    wave: int
    status: str
    attempts: int
    exit_code: int | None
    duration_seconds: float | None
    error: str
    result: Any
    result_error: str
    output_tail: str
    tokens: int | None
    cost_usd: float | None
    cost_note: str
    usage: dict[str, Any] | None
    changes: dict[str, Any] | None
    url: str


@dataclass(frozen=True)
class BatchDetail(_Readable):
    id: int
    batch: int  # the same as id, as in `manage.py spawn --json`
    name: str
    owner: str | None
    status: str
    mode: str
    max_parallel: int
    cancel_requested: bool
    launched_at: datetime
    finished_at: datetime | None
    sequential_of: int | None
    counts: dict[str, int]
    timings: Timings
    open_escalations: int
    cost: dict[str, Any]
    succeeded: list[str]
    failed: list[str]
    aggregation: dict[str, Any] | None
    runs: list[RunSummary]
    url: str


@dataclass(frozen=True)
class ResultsSummary(_Readable):
    """Every batch one ParallelSpawner launched. `succeeded` / `failed` name runs as `<batch id>/<key>`.
    `cluster_startup_seconds`: how long the cluster this spawner started took to be ready (None when one
    was already running); no batch's wall time includes it."""

    batches: list[BatchDetail]
    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    all_succeeded: bool = True
    cluster_startup_seconds: float | None = None
