"""django-q2 entry points: thin, load by id, call execution.

The reaper is not a q2 task (q2 schedules have minute resolution; the lease is 30 s):
it runs in `manage.py spawner_cluster`, which is what `serve` starts. Use that, not
plain `qcluster`. Webhooks are not q2 tasks either: the cluster's delivery loop sends them
(spawner.engine.webhooks), so they never hold an agent's worker.
"""

from __future__ import annotations

from spawner.engine import execution, merging


def execute_attempt(attempt_id: int) -> str:
    return execution.run_attempt(attempt_id)


def merge_queue(batch_id: int) -> str:
    return merging.process(batch_id)
