"""django-q2's entry point for scheduled templates (a Schedule of type CRON calls it with the
id of its `TemplateSchedule`); the work is `services.schedule_fire`."""

from __future__ import annotations


def scheduled_launch(link_id: int) -> int | None:
    """Launch the scheduled template; the batch's id (a refusal fails the task, kept by q2)."""
    from spawner import services

    batch = services.schedule_fire(link_id)
    return batch.id if batch is not None else None
