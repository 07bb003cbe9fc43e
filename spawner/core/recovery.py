"""Pure decisions of recovery: what an agent's exit record says, what to resend.

What a hand-back costs is `rules.retry_delay`'s business.

No I/O here; the engine (`spawner/engine/recovery.py`, the reaper, the cluster) acts on them.
"""

from __future__ import annotations

from spawner.states import AttemptStatus


def parse_exit_record(text: str) -> int | None:
    """The exit code the runner's shim wrote when the agent ended; None if absent or cut short.

    The shim writes the code and a newline; a record without its newline was being written when
    the process group was killed, so it proves nothing.
    """
    if not text.endswith("\n"):
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def harvested_status(exit_code: int, success_codes: list[int]) -> tuple[str, str]:
    """(attempt status, error) of an agent that ended on its own while no worker watched it."""
    if exit_code in success_codes:
        return AttemptStatus.SUCCEEDED, ""
    return AttemptStatus.FAILED, f"exit code {exit_code}"


def holder_dead(held_by: str, live_clusters: set[str]) -> bool:
    """A queued attempt whose message a cluster took but that cluster stopped beating: send it again."""
    return bool(held_by) and held_by not in live_clusters


def unheld_stranded(*, idle_seconds: float, lease: float, broker_waiting: int) -> bool:
    """A queued attempt no cluster took and no worker waits on: its message was lost (e.g. popped from
    Redis by a cluster that died before it could say so). Only when the broker holds nothing, so a
    healthy backlog is never duplicated, and at most once per lease."""
    return broker_waiting == 0 and idle_seconds > lease
