"""Honest timings: wall time, summed work, critical path, speedup and efficiency."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from spawner.core import planning


def figures(
    *,
    wall: float,
    durations: Mapping[str, float],
    deps: Mapping[str, Sequence[str]],
    capacity: int,
) -> dict[str, float | None]:
    """speedup = summed work / wall; efficiency = speedup / the parallelism actually available.

    The available parallelism is what the batch could have used at best: no more
    than its slots, and no more than its work divided by its critical path.
    """
    total = sum(durations.values())
    cp, _ = planning.critical_path(deps, durations)
    speedup = total / wall if wall > 0 else None
    available = min(capacity, total / cp) if cp > 0 else None
    efficiency = speedup / available if speedup is not None and available else None
    return {
        "wall_seconds": round(wall, 3),
        "sum_seconds": round(total, 3),
        "critical_path_seconds": round(cp, 3),
        "speedup": round(speedup, 3) if speedup is not None else None,
        "efficiency": round(efficiency, 3) if efficiency is not None else None,
    }


def busy_seconds(intervals: Sequence[tuple[float, float]]) -> float:
    """Length of the union of intervals: the time something of the batch was queued or running.

    A batch reopened by a manual retry an hour later does not count that idle hour.
    """
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total
