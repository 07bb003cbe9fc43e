"""Tell an outside URL when a batch ends or escalates. Delivery is a q2 task with retries,
so a slow or dead webhook never blocks a batch."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request

from django.db import transaction

log = logging.getLogger(__name__)
ATTEMPTS = 4


def notify(batch, kind: str, data: dict) -> None:
    if not batch.webhook_url:
        return
    from django_q.tasks import async_task

    payload = {"event": kind, "batch": batch.id, "name": batch.name, "status": batch.status, **data}
    url = batch.webhook_url
    transaction.on_commit(lambda: async_task("spawner.engine.tasks.deliver_webhook", url, payload, group="webhooks"))


def deliver(url: str, payload: dict, *, attempts: int = ATTEMPTS, backoff: float = 1.0) -> bool:
    body = json.dumps(payload).encode()
    for n in range(attempts):
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - admin-set URL
                if response.status < 300:
                    return True
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            log.warning("webhook %s failed (try %d of %d): %s", url, n + 1, attempts, exc)
        time.sleep(backoff * 2**n)
    return False
