"""Prompt checks that need the server: a `path` prompt (pytest, ruff) must stay inside the run's
working directory, checked at launch (a field error) and again at spawn (dependency results
are filled into prompts only then)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from spawner import spec
from spawner.core import confinement
from spawner.models import AgentType


def problem(prompt_kind: str, prompt: str, cwd: Path | str) -> str:
    if prompt_kind != confinement.PATH:
        return ""
    return confinement.path_prompt_problem(prompt, str(cwd), os.path.realpath)


def check_at_spawn(agent_type: AgentType, prompt: str, cwd: Path) -> None:
    """Raise ValueError (the attempt fails to start, visibly) for a prompt the type may not take."""
    if why := problem(agent_type.prompt_kind, prompt, cwd):
        raise ValueError(f"prompt refused for agent type {agent_type.name!r}: {why}")


def launch_errors(batch_spec: spec.BatchSpec, task_cwds: Mapping[str, Path]) -> list[spec.FieldError]:
    """A field error on `prompt` for each task whose path prompt leaves its working directory."""
    kinds = dict(
        AgentType.objects.filter(name__in={t.agent for t in batch_spec.tasks}).values_list("name", "prompt_kind")
    )
    errors = []
    for t in batch_spec.tasks:
        if t.key in task_cwds and (why := problem(kinds.get(t.agent, ""), t.prompt, task_cwds[t.key])):
            errors.append(spec.FieldError(f"task '{t.key}'", "prompt", why, t.key))
    return errors
