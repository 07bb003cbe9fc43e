"""The runner interface: start an attempt, poll it, stop it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class RunnerError(Exception):
    """The attempt could not start; the message says why (shown to the user)."""


@dataclass(frozen=True)
class ModelCall:
    """What a model agent's call needs (spawner.runners.model); the key is read at spawn time, never stored."""

    base_url: str
    model: str
    api_key: str = ""
    system_prompt: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    response_schema: dict | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 120.0


@dataclass(frozen=True)
class Invocation:
    """Everything one attempt needs, with no database in sight."""

    argv_template: tuple[str, ...]
    prompt: str
    prompt_via: str
    key: str
    cwd: Path
    log_path: Path
    result_path: Path
    prompt_path: Path
    env: dict[str, str] = field(default_factory=dict)
    model: ModelCall | None = None  # a model agent: the call to make instead of a process
    # Seconds without a renewed lease file after which the agent's own launcher stops it (0: never).
    fence_seconds: float = 0.0
    lease_since: float = 0.0  # the wall-clock time of the worker's last heartbeat (0: now)


class Started(Protocol):
    pid: int | None
    pgid: int | None  # None: no process group (a model agent is a thread of its worker)

    def poll(self) -> int | None: ...

    def wait(self, timeout: float) -> int | None:
        """Block up to `timeout` seconds for the end; the exit code, or None if still running."""
        ...

    def stop(self, grace: float) -> int | None: ...


class Runner(Protocol):
    def start(self, invocation: Invocation) -> Started: ...
