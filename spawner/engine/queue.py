"""Hand attempts to the django-q2 broker."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from spawner.engine import wake
from spawner.models import RunAttempt

EXECUTE = "spawner.engine.tasks.execute_attempt"


def enqueue_attempt(attempt: RunAttempt, batch_id: int) -> None:
    """Hand the attempt to a q2 worker once the transaction that created it commits.

    With the ORM broker the message is a row in the same database, so it is written in the
    same transaction (it appears exactly when the attempt does, with no extra commit);
    with Redis it is sent after the commit.
    """
    from django_q.tasks import async_task

    attempt_id = attempt.id

    def send() -> None:
        async_task(EXECUTE, attempt_id, task_name=f"attempt-{attempt_id}", group=f"batch-{batch_id}")

    if settings.Q_CLUSTER.get("orm") == "default":
        send()
        wake.after_commit(wake.DISPATCH)  # the pushers need not wait for their poll
    else:
        transaction.on_commit(send)
