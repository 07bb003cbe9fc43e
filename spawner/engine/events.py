"""Append to the event log. Call inside the transaction that makes the change."""

from __future__ import annotations

from typing import Any

from spawner.engine import wake
from spawner.models import RunEvent


def record(
    *,
    batch_id: int,
    kind: str,
    run_id: int | None = None,
    attempt: int | None = None,
    status: str = "",
    data: dict[str, Any] | None = None,
    actor=None,
) -> RunEvent:
    event = RunEvent.objects.create(
        batch_id=batch_id,
        run_id=run_id,
        attempt=attempt,
        kind=kind,
        status=status,
        data=data or {},
        actor=actor if actor is not None and actor.is_authenticated else None,
    )
    wake.after_commit(wake.EVENTS)  # the relays need not wait for their poll
    return event
