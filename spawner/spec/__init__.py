"""Batch spec: YAML or JSON in, a validated batch description out.

Every error names where it is: the task (by key and by line), and the field.
Validation is pure: the agent types and roles it checks against are passed in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from spawner.core import netcheck, planning
from spawner.spec.fields import (  # noqa: F401 - FieldError and SpecInvalid are spec's API
    Collector,
    FieldError,
    SpecInvalid,
    as_choice,
    as_int,
    as_number,
    as_str_list,
)
from spawner.spec.templating import dep_refs, render_prompt
from spawner.states import FailurePolicy, Mode, Strategy

MODES = tuple(Mode.values)
FAILURE_POLICIES = tuple(FailurePolicy.values)
AGGREGATIONS = tuple(Strategy.values)
PRIORITIES = {"P0": 0, "P1": 1, "P2": 2}
KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

BATCH_FIELDS = {
    "name",
    "mode",
    "max_parallel",
    "timeout",
    "retries",
    "backoff",
    "failure_policy",
    "aggregation",
    "cwd",
    "agent",
    "tasks",
    "vars",
    "webhook",
}
TASK_FIELDS = {
    "key",
    "agent",
    "role",
    "prompt",
    "vars",
    "priority",
    "depends_on",
    "files",
    "timeout",
    "retries",
    "cwd",
    "estimate",
}


@dataclass(frozen=True)
class Limits:
    max_tasks: int = 1000
    max_parallel: int = 256
    max_timeout: int = 4 * 3600
    max_retries: int = 10
    webhook_allow_hosts: frozenset[str] = frozenset()  # may be private (SPAWNER_WEBHOOK_ALLOW_HOSTS)


@dataclass(frozen=True)
class AgentInfo:
    name: str
    available: bool = True
    reason: str = ""
    admin_only: bool = False
    default_timeout: int | None = None


@dataclass(frozen=True)
class TaskSpec:
    key: str
    agent: str
    prompt: str
    role: str = ""
    priority: int = 1
    depends_on: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    timeout: int = 1800
    retries: int = 0
    cwd: str = ""
    estimate: float | None = None


@dataclass(frozen=True)
class BatchSpec:
    name: str
    tasks: tuple[TaskSpec, ...]
    mode: str = Mode.PARALLEL
    max_parallel: int = 3
    timeout: int = 1800
    retries: int = 0
    backoff: float = 2.0
    failure_policy: str = FailurePolicy.CONTINUE
    aggregation: str = ""
    webhook: str = ""
    cwd: str = ""
    # (task key, why) for tasks whose agent type this server cannot run now.
    unavailable: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @property
    def warnings(self) -> list[str]:
        return [f"task '{key}': {why}" for key, why in self.unavailable]

    def plan_tasks(self, past: Mapping[str, float] | None = None) -> list[planning.PlanTask]:
        past = past or {}
        return [
            planning.PlanTask(
                key=t.key,
                depends_on=t.depends_on,
                priority=t.priority,
                agent_type=t.agent,
                files=t.files,
                dep_refs=dep_refs(t.prompt),
                estimate=t.estimate if t.estimate is not None else past.get(t.key),
            )
            for t in self.tasks
        ]


# --- parsing ------------------------------------------------------------------------


class _PlainLoader(yaml.SafeLoader):
    """Safe YAML that keeps dates as text: a spec holds only what JSON can hold."""


_PlainLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _not_plain(value: Any, path: str) -> str | None:
    """The path of the first value that is not JSON data or holds a NUL character."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str | int | float | bool) and k is not None:
                return f"{path}.{k!r}"
            if found := _not_plain(v, f"{path}.{k}" if path else str(k)):
                return found
        return None
    if isinstance(value, list):
        return next((f for i, v in enumerate(value) if (f := _not_plain(v, f"{path}[{i}]"))), None)
    return None if value is None or isinstance(value, int | float | bool) else path


def parse_text(text: str) -> tuple[Any, dict[int, int]]:
    """YAML (JSON is YAML too) -> data, plus the source line of each task by index."""
    if "\x00" in text:
        raise SpecInvalid([FieldError("spec", "", "contains a NUL character")])
    try:
        data = yaml.load(text, Loader=_PlainLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "spec"
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecInvalid([FieldError(where, "", f"not valid YAML or JSON: {problem}")]) from None
    if bad := _not_plain(data, ""):
        raise SpecInvalid([FieldError(bad or "spec", "", "must be plain text, numbers, lists or mappings")])
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return data, {}
    if repeated := _repeated_fields(node):
        raise SpecInvalid(repeated)
    return data, {i: item.start_mark.line + 1 for i, item in enumerate(_task_nodes(node))}


def _task_nodes(node: yaml.Node | None) -> list[yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        return []
    for key_node, value_node in node.value:
        if key_node.value == "tasks" and isinstance(value_node, yaml.SequenceNode):
            return value_node.value
    return []


def _repeated_fields(node: yaml.Node | None) -> list[FieldError]:
    """YAML and JSON silently keep the last of two equal keys; in a spec that is always a mistake."""
    if not isinstance(node, yaml.MappingNode):
        return []
    places = [("batch", None, node)]
    for i, item in enumerate(_task_nodes(node)):
        if isinstance(item, yaml.MappingNode):
            keys = (v.value for k, v in item.value if k.value == "key" and isinstance(v, yaml.ScalarNode))
            key = next(keys, None)
            where = f"tasks[{i}], line {item.start_mark.line + 1}"
            places.append((f"task '{key}' ({where})" if key else where, key, item))
    errors = []
    for where, task, mapping in places:
        first_line: dict[str, int] = {}
        for key_node, _ in mapping.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in first_line:
                message = f"is given twice (lines {first_line[key_node.value]} and {line}); give it once"
                errors.append(FieldError(where, key_node.value, message, task))
            first_line.setdefault(key_node.value, line)
    return errors


def load(
    text: str,
    *,
    agents: Mapping[str, AgentInfo],
    roles: Mapping[str, str],
    limits: Limits = Limits(),
    is_admin: bool = False,
) -> BatchSpec:
    data, lines = parse_text(text)
    return validate(data, agents=agents, roles=roles, limits=limits, is_admin=is_admin, lines=lines)


# --- validation ---------------------------------------------------------------------


def validate(
    data: Any,
    *,
    agents: Mapping[str, AgentInfo],
    roles: Mapping[str, str],
    limits: Limits = Limits(),
    is_admin: bool = False,
    lines: Mapping[int, int] | None = None,
) -> BatchSpec:
    if not isinstance(data, dict):
        raise SpecInvalid([FieldError("spec", "", "must be a mapping with 'name' and 'tasks'")])
    c = Collector()
    batch, defaults = _batch_settings(c, data, limits, is_admin=is_admin)
    raw_tasks = _raw_tasks(c, data, limits)
    context = _TaskContext(agents, roles, limits, is_admin, lines or {}, defaults)
    tasks: list[TaskSpec] = []
    where_of: dict[str, str] = {}
    for i, raw in enumerate(raw_tasks):
        if task := _task(c, i, raw, where_of, context):
            tasks.append(task)
    _check_graph(c, tasks, where_of)
    if c.errors:
        raise SpecInvalid(c.errors)
    unavailable = tuple(
        (t.key, f"agent type '{t.agent}' is not available on this server: {agents[t.agent].reason}")
        for t in tasks
        if not agents[t.agent].available
    )
    return BatchSpec(tasks=tuple(tasks), unavailable=unavailable, **batch)


@dataclass(frozen=True)
class _Defaults:
    """What a batch lends its tasks."""

    agent: Any
    vars: Mapping[str, Any]
    timeout: int | None  # only when the batch sets one
    retries: int


@dataclass(frozen=True)
class _TaskContext:
    agents: Mapping[str, AgentInfo]
    roles: Mapping[str, str]
    limits: Limits
    is_admin: bool
    lines: Mapping[int, int]
    defaults: _Defaults


def _batch_settings(c: Collector, data: dict, limits: Limits, *, is_admin: bool) -> tuple[dict[str, Any], _Defaults]:
    for extra in sorted(set(data) - BATCH_FIELDS, key=str):
        c.add("batch", str(extra), f"unknown field (known: {', '.join(sorted(BATCH_FIELDS))})")
    name = data.get("name", "")
    if not isinstance(name, str) or not name.strip():
        c.add("batch", "name", "is required (a short text)")
        name = ""
    # A default nobody wrote is held to the server's limits rather than rejected by them.
    max_parallel = data.get("max_parallel", min(3, limits.max_parallel))
    timeout = as_int(c, "batch", "timeout", data.get("timeout", min(1800, limits.max_timeout)), 1, limits.max_timeout)
    retries = as_int(c, "batch", "retries", data.get("retries", 0), 0, limits.max_retries)
    backoff = as_number(c, "batch", "backoff", data.get("backoff", 2), 0, 3600)
    aggregation = data.get("aggregation") or ""
    if aggregation:
        as_choice(c, "batch", "aggregation", aggregation, AGGREGATIONS)
    cwd = data.get("cwd") or ""
    if not isinstance(cwd, str):
        c.add("batch", "cwd", f"must be a path, got {cwd!r}")
        cwd = ""
    webhook = data.get("webhook") or ""
    if not isinstance(webhook, str) or not re.match(r"^https?://[^\s/]+", webhook) and webhook:
        c.add("batch", "webhook", f"must be an http(s) URL, got {webhook!r}")
        webhook = ""
    elif webhook and not is_admin:
        # The server POSTs to it: an open URL would let anyone probe the server's network.
        c.add("batch", "webhook", "may only be set by an admin")
        webhook = ""
    elif webhook and (problem := netcheck.url_problem(webhook, limits.webhook_allow_hosts)):
        c.add("batch", "webhook", problem)
        webhook = ""
    batch_vars = data.get("vars") or {}
    if not isinstance(batch_vars, dict):
        c.add("batch", "vars", "must be a mapping of names to values")
        batch_vars = {}
    settings = {
        "name": name.strip(),
        "mode": as_choice(c, "batch", "mode", data.get("mode", Mode.PARALLEL), MODES) or Mode.PARALLEL,
        "max_parallel": as_int(c, "batch", "max_parallel", max_parallel, 1, limits.max_parallel) or 3,
        "timeout": timeout or 1800,
        "retries": retries or 0,
        "backoff": backoff if backoff is not None else 2.0,
        "failure_policy": as_choice(
            c, "batch", "failure_policy", data.get("failure_policy", FailurePolicy.CONTINUE), FAILURE_POLICIES
        )
        or FailurePolicy.CONTINUE,
        "aggregation": aggregation,
        "webhook": webhook,
        "cwd": cwd,
    }
    defaults = _Defaults(
        agent=data.get("agent"),
        vars=batch_vars,
        timeout=timeout if "timeout" in data else None,
        retries=retries or 0,
    )
    return settings, defaults


def _raw_tasks(c: Collector, data: dict, limits: Limits) -> list:
    raw_tasks = data.get("tasks")
    if raw_tasks is None or raw_tasks == []:
        c.add("batch", "tasks", "the batch is empty: give at least one task")
    elif not isinstance(raw_tasks, list):
        c.add("batch", "tasks", "must be a list of tasks")
    elif len(raw_tasks) > limits.max_tasks:
        c.add("batch", "tasks", f"has {len(raw_tasks)} tasks; the maximum is {limits.max_tasks}")
    else:
        return raw_tasks
    raise SpecInvalid(c.errors)


def _task(c: Collector, i: int, raw: Any, where_of: dict[str, str], ctx: _TaskContext) -> TaskSpec | None:
    """One task, checked field by field; None when it cannot even be named."""
    line = f", line {ctx.lines[i]}" if i in ctx.lines else ""
    if not isinstance(raw, dict):
        c.add(f"tasks[{i}]{line}", "", "must be a mapping with at least 'key'")
        return None
    key = raw.get("key")
    if not isinstance(key, str) or not KEY_RE.match(key):
        c.add(f"tasks[{i}]{line}", "key", f"must be letters, digits, '_', '-' or '.', got {key!r}")
        return None
    where = f"task '{key}' (tasks[{i}]{line})"
    if key in where_of:
        c.add(where, "key", f"duplicate key: also used by {where_of[key]}", key)
        return None
    where_of[key] = where
    for extra in sorted(set(raw) - TASK_FIELDS, key=str):
        c.add(where, str(extra), f"unknown field (known: {', '.join(sorted(TASK_FIELDS))})", key)
    agent, info = _task_agent(c, where, key, raw.get("agent", ctx.defaults.agent), ctx)
    role, prompt = _task_prompt(c, where, key, raw, ctx)
    limits = ctx.limits
    # A timeout set on the batch beats the agent type's default; the task's own beats both.
    agent_timeout = info.default_timeout if info else None
    default_timeout = ctx.defaults.timeout or min(agent_timeout or 1800, limits.max_timeout)
    timeout = as_int(c, where, "timeout", raw.get("timeout", default_timeout), 1, limits.max_timeout, key)
    retries = as_int(c, where, "retries", raw.get("retries", ctx.defaults.retries), 0, limits.max_retries, key)
    estimate = raw.get("estimate")
    if estimate is not None:
        estimate = as_number(c, where, "estimate", estimate, 0, 10 * limits.max_timeout, key)
    cwd = raw.get("cwd") or ""
    if not isinstance(cwd, str):
        c.add(where, "cwd", f"must be a path, got {cwd!r}", key)
        cwd = ""
    return TaskSpec(
        key=key,
        agent=agent,
        prompt=prompt,
        role=role,
        priority=_priority(c, where, key, raw.get("priority", "P1")),
        depends_on=as_str_list(c, where, "depends_on", raw.get("depends_on"), key),
        files=as_str_list(c, where, "files", raw.get("files"), key),
        timeout=timeout or 1800,
        retries=retries or 0,
        cwd=cwd,
        estimate=estimate,
    )


def _task_agent(c: Collector, where: str, key: str, agent: Any, ctx: _TaskContext):
    info = ctx.agents.get(agent) if isinstance(agent, str) else None
    if not agent:
        c.add(where, "agent", "is required (or set 'agent' on the batch)", key)
    elif info is None:
        known = ", ".join(sorted(ctx.agents)) or "none defined"
        c.add(where, "agent", f"unknown agent type {agent!r} (known: {known})", key)
    elif info.admin_only and not ctx.is_admin:
        c.add(where, "agent", f"agent type {agent!r} may only be launched by an admin", key)
    return (agent if isinstance(agent, str) else ""), info


def _task_prompt(c: Collector, where: str, key: str, raw: dict, ctx: _TaskContext) -> tuple[str, str]:
    """(role, prompt): the prompt filled into its role's template and its variables."""
    prompt = raw.get("prompt")
    prompt = "" if prompt is None else prompt
    if not isinstance(prompt, str):
        c.add(where, "prompt", f"must be text, got {type(prompt).__name__}", key)
        prompt = ""
    role = raw.get("role") or ""
    if not isinstance(role, str):
        c.add(where, "role", f"must be the name of a role, got {role!r}", key)
        role = ""
    task_vars = raw.get("vars") or {}
    if not isinstance(task_vars, dict):
        c.add(where, "vars", "must be a mapping of names to values", key)
        task_vars = {}
    variables = {**ctx.defaults.vars, **task_vars, "key": key}
    if role and role not in ctx.roles:
        known = ", ".join(sorted(ctx.roles)) or "none defined"
        c.add(where, "role", f"unknown role {role!r} (known: {known})", key)
    elif role:
        prompt, unknown = render_prompt(ctx.roles[role], {**variables, "task": prompt})
        for name in unknown:
            c.add(where, "vars", f"role {role!r} uses {{{{ {name} }}}} but no value is given", key)
    elif task_vars or ctx.defaults.vars:
        prompt, unknown = render_prompt(prompt, variables)
        for name in unknown:
            c.add(where, "prompt", f"uses {{{{ {name} }}}} but no value is given", key)
    return role, prompt


def _priority(c: Collector, where: str, key: str, value: Any) -> int:
    label = f"P{value}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
    priority = PRIORITIES.get(label.upper())
    if priority is None:
        c.add(where, "priority", f"must be P0, P1 or P2, got {value!r}", key)
        return 1
    return priority


def _check_graph(c: Collector, tasks: list[TaskSpec], where_of: Mapping[str, str]) -> None:
    keys = {t.key for t in tasks}
    graph_ok = True
    for t in tasks:
        for dep in t.depends_on:
            if dep == t.key:
                c.add(where_of[t.key], "depends_on", "a task cannot depend on itself", t.key)
                graph_ok = False
            elif dep not in keys:
                c.add(where_of[t.key], "depends_on", f"unknown dependency '{dep}'", t.key)
                graph_ok = False
    if not graph_ok:
        return
    deps = {t.key: t.depends_on for t in tasks}
    cycle = planning.find_cycle(deps)
    if cycle:
        c.add(where_of[cycle[0]], "depends_on", "dependency cycle: " + " -> ".join(cycle), cycle[0])
        return
    for conflict in planning.file_conflicts(deps, {t.key: t.files for t in tasks}):
        c.add(
            where_of[conflict.second],
            "files",
            f"conflict: {conflict.describe()}; add a depends_on between them or narrow 'files'",
            conflict.second,
        )
