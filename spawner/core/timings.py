"""Honest timings: wall time, summed work, critical path, speedup and efficiency.

One set of definitions, used by the batch page, its timeline, the batches list, the compare
page and the figures stored when a batch ends:

- since launch: from the batch's launch to its end (or now, while it runs), idle gaps included;
- idle: the time the batch spent ended before a person's retry reopened it;
- wall (busy): since launch minus idle; a batch that ended and was reopened by a person's retry an
  hour later does not count that hour (the engine's own pauses between runs are busy time);
- work: the summed running time of the attempts counted;
- parallelism: work / wall, how many attempts ran at once on average (stored as `speedup`);
- efficiency: parallelism over the parallelism the batch could have used at best;
- speedup (measured): the sequential re-run's wall over the parallel batch's wall, both counting
  the batch's own pass: from its launch to the last attempt it queued itself before it first
  ended (first attempts, automatic retries, hand-backs, rate-limit waits), without the attempts
  a person asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Attempt:
    """One attempt, its times in seconds on the same clock as the batch's launch."""

    key: str
    queued: float | None
    started: float | None
    finished: float | None  # None: not ended yet, counted up to the batch's end (or now)
    by_person: bool = False  # queued by a person's retry, not by the batch itself


@dataclass(frozen=True)
class Measure:
    """A batch's figures under the definitions above (seconds, ratios, counts)."""

    wall: float
    since_launch: float
    idle: float
    work: float
    critical_path: float
    parallelism: float | None
    efficiency: float | None
    counted: int  # attempts counted
    left_out: int  # a person's retries not counted (own pass only)
    left_out_work: float  # their running time

    def stored(self) -> dict[str, float | None]:
        """The figures a batch keeps when it ends (Batch.wall_seconds and the rest)."""
        return {
            "wall_seconds": round(self.wall, 3),
            "sum_seconds": round(self.work, 3),
            "critical_path_seconds": round(self.critical_path, 3),
            "speedup": None if self.parallelism is None else round(self.parallelism, 3),
            "efficiency": None if self.efficiency is None else round(self.efficiency, 3),
        }


def measure(
    *,
    launched: float,
    end: float,
    attempts: Iterable[Attempt],
    deps: Mapping[str, Sequence[str]],
    capacity: int,
    own_pass: bool = False,
    closed: Sequence[tuple[float, float]] = (),
) -> Measure:
    """The batch's figures at `end` (its end, or now while it runs).

    `closed`: the intervals the batch spent ended before a person reopened it (its end, then the
    reopening): idle. `own_pass`: count only what the batch did itself, the like-for-like basis of
    the parallel/sequential comparison: the attempts it queued itself until it first ended, a
    person's retries left out; its wall then runs from the launch to the last of those.
    """
    first_end = min((start for start, _ in closed), default=None)
    counted, left_out, left_out_work = [], 0, 0.0
    for a in attempts:
        own = not a.by_person and (first_end is None or a.queued is None or a.queued <= first_end)
        if own_pass and not own:
            left_out += 1
            left_out_work += _ran(a, end)
        else:
            counted.append(a)
    if own_pass:
        last = max((_stop(a, end) for a in counted), default=end)
        since, idle = max(0.0, last - launched), 0.0
    else:
        since = max(0.0, end - launched)
        idle = min(since, sum(max(0.0, min(stop, end) - max(start, launched)) for start, stop in closed))
    wall = since - idle
    durations: dict[str, float] = dict.fromkeys(deps, 0.0)
    for a in counted:
        durations[a.key] = durations.get(a.key, 0.0) + _ran(a, end)
    base = figures(wall=wall, durations=durations, deps=deps, capacity=capacity)
    return Measure(
        wall=wall,
        since_launch=since,
        idle=idle,
        work=sum(durations.values()),
        critical_path=base["critical_path_seconds"] or 0.0,
        parallelism=base["speedup"],
        efficiency=base["efficiency"],
        counted=len(counted),
        left_out=left_out,
        left_out_work=left_out_work,
    )


def _stop(a: Attempt, end: float) -> float:
    return a.finished if a.finished is not None else end


def _ran(a: Attempt, end: float) -> float:
    """Running time: from its start to its end (or `end`); an attempt that never started ran 0 s."""
    if a.started is None:
        return 0.0
    return max(0.0, _stop(a, end) - a.started)


def speedup(*, sequential_wall: float | None, parallel_wall: float | None) -> float | None:
    """The measured speedup: the sequential re-run's wall over the parallel batch's wall."""
    if not sequential_wall or not parallel_wall:
        return None
    return round(sequential_wall / parallel_wall, 3)


def run_elapsed(*, recorded: float | None, started: float | None, now: float, running: bool) -> float | None:
    """A run's duration: what its ended attempts ran, plus the running attempt so far."""
    if running and started is not None:
        return (recorded or 0.0) + max(0.0, now - started)
    return recorded
