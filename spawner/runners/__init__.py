"""Runners start an agent's process (or call) for one attempt behind one small interface."""

from __future__ import annotations

from spawner.runners.base import Invocation, ModelCall, Runner, RunnerError, Started
from spawner.runners.command import CommandRunner
from spawner.runners.model import ModelRunner
from spawner.states import AgentKind


def runner_for(agent_type) -> Runner:
    """A process for a command agent type, a streamed API call for a model agent type."""
    if getattr(agent_type, "kind", AgentKind.COMMAND) == AgentKind.MODEL:
        return ModelRunner()
    return CommandRunner()


__all__ = ["CommandRunner", "Invocation", "ModelCall", "ModelRunner", "Runner", "RunnerError", "Started", "runner_for"]
