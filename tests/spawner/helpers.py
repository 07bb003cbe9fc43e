"""Small helpers for engine tests: launch a spec, wait for states, read process facts."""

from __future__ import annotations

import os
import time
from pathlib import Path

from spawner import services
from spawner.engine import execution
from spawner.models import AgentRun, Batch, RunAttempt
from spawner.states import BATCH_TERMINAL


def launch(text: str, base_dir: Path, **kwargs) -> Batch:
    batch_spec = services.spec_load(text, is_admin=True)
    return services.batch_launch(batch_spec=batch_spec, base_dir=base_dir, spec_text=text, **kwargs)


def wait_for(predicate, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_batch(batch: Batch, timeout: float = 30) -> Batch:
    def ended():
        batch.refresh_from_db()
        return batch.status in BATCH_TERMINAL

    wait_for(ended, timeout, f"batch #{batch.id} to end")
    return batch


def wait_run(batch: Batch, key: str, status: str, timeout: float = 30) -> AgentRun:
    def reached():
        run = AgentRun.objects.get(batch=batch, key=key)
        return run if run.status == status else None

    return wait_for(reached, timeout, f"run {key} to be {status}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False
    return True


TWO_TASKS = (
    "name: f\nagent: sh\nretries: {retries}\n{extra}\ntasks:\n  - {{key: a, prompt: x}}\n  - {{key: b, prompt: y}}\n"
)


def queued_batch(tmp_path, retries=0, extra=""):
    """A launched batch with no cluster: its first attempts sit queued."""
    return launch(TWO_TASKS.format(retries=retries, extra=extra), tmp_path)


def claimed(batch, key):
    attempt = RunAttempt.objects.select_related("run__agent_type", "run__batch").get(run__batch=batch, run__key=key)
    assert execution.attempt_claim(attempt) == (True, 0.0)
    return attempt
