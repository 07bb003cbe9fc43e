"""The runner interface: start an attempt, poll it, stop it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class RunnerError(Exception):
    """The attempt could not start; the message says why (shown to the user)."""


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


class Started(Protocol):
    pid: int
    pgid: int

    def poll(self) -> int | None: ...

    def wait(self, timeout: float) -> int | None:
        """Block up to `timeout` seconds for the end; the exit code, or None if still running."""
        ...

    def stop(self, grace: float) -> int | None: ...


class Runner(Protocol):
    def start(self, invocation: Invocation) -> Started: ...
