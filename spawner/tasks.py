"""django-q2 entry points: thin, load by id, call execution or the reaper."""

from __future__ import annotations

from spawner import execution, reaper


def execute_attempt(attempt_id: int) -> str:
    return execution.run_attempt(attempt_id)


def reap() -> int:
    """Scheduled backstop for clusters started with plain `qcluster` (no reaper thread)."""
    return reaper.tick()


def deliver_webhook(url: str, payload: dict) -> bool:
    from spawner import webhooks

    return webhooks.deliver(url, payload)
