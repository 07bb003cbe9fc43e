"""Runners start an agent's process (or call) for one attempt behind one small interface."""

from __future__ import annotations

from spawner.runners.base import Invocation, Runner, RunnerError, Started
from spawner.runners.command import CommandRunner


def runner_for(agent_type) -> Runner:
    """Every agent type is a command today; a model-endpoint runner will sit beside it."""
    return CommandRunner()


__all__ = ["CommandRunner", "Invocation", "Runner", "RunnerError", "Started", "runner_for"]
