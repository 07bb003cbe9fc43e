"""Batch spec: YAML or JSON in, a validated batch description out.

Every error names where it is: the task (by key and by line), and the field.
Validation is pure: the agent types and roles it checks against are passed in.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spawner.core import netcheck, planning
from spawner.spec.fields import (  # noqa: F401 - FieldError and SpecInvalid are spec's API
    Collector,
    FieldError,
    SpecInvalid,
    Where,
    as_choice,
    as_int,
    as_number,
    as_str_list,
    shown,
)
from spawner.spec.reading import MAX_SPEC_BYTES, MAX_TEXT_CHARS, parse_text  # noqa: F401 - spec's API
from spawner.spec.templating import PromptTooLong, dep_refs, render_prompt
from spawner.spec.workspace import WorkspaceSpec
from spawner.spec.workspace import read as read_workspace
from spawner.states import FailurePolicy, Mode, Strategy

MODES = tuple(Mode.values)
FAILURE_POLICIES = tuple(FailurePolicy.values)
AGGREGATIONS = tuple(Strategy.values)
PRIORITIES = {"P0": 0, "P1": 1, "P2": 2}
KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

# The longest value each stored text may have: the columns it is stored in.
MAX_NAME_CHARS = 200  # Batch.name
MAX_WEBHOOK_CHARS = 200  # Batch.webhook_url
WEBHOOK_FORMATS = ("json", "slack")
MAX_CWD_CHARS = 500  # Batch.cwd, AgentRun.cwd
MAX_ROLE_CHARS = 64  # AgentRun.role
MAX_PROMPT_CHARS = MAX_TEXT_CHARS  # a task's prompt once its role and variables are filled
# What a task's `files` may hold: each pattern is compared with others (see planning).
MAX_FILES_PER_TASK = 100
MAX_GLOB_CHARS = 300
MAX_GLOB_SEGMENTS = 32

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
    "webhook_format",
    "workspace",
    "budget_usd",
    "on_budget",
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
    "budget_usd",
    "estimate_usd",
}
# Budgets (USD): a batch's and a task's, and a task's declared cost estimate.
MAX_BUDGET_USD = 1_000_000.0
ON_BUDGET = ("skip_pending", "cancel_running")


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
    budget_usd: float | None = None
    estimate_usd: float | None = None


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
    webhook_format: str = "json"  # json | slack (a Slack-compatible {"text": ...} body)
    cwd: str = ""
    workspace: WorkspaceSpec | None = None
    budget_usd: float | None = None
    on_budget: str = "skip_pending"
    # (task key, why) for tasks whose agent type this server cannot run now.
    unavailable: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    # The spec as parsed and as written, stored with the batch: read once, never parsed again.
    data: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)
    text: str = field(default="", compare=False, repr=False)

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


# --- loading ------------------------------------------------------------------------


def load(
    text: str,
    *,
    agents: Mapping[str, AgentInfo],
    roles: Mapping[str, str],
    limits: Limits = Limits(),
    is_admin: bool = False,
) -> BatchSpec:
    data, lines = parse_text(text)
    try:
        batch_spec = validate(data, agents=agents, roles=roles, limits=limits, is_admin=is_admin, lines=lines)
    except SpecInvalid as exc:
        raise SpecInvalid([_at_line(e, lines) for e in exc.errors]) from None
    return dataclasses.replace(batch_spec, data=data, text=text)


def _at_line(error: FieldError, lines: Mapping[Any, int]) -> FieldError:
    """The error with the line of its field as written (a field the task inherits: the task's line)."""
    name = error.field.split(".", 1)[0]
    place = error.index if error.index is not None else "batch" if error.where == "batch" else None
    at = lines.get((place, name)) if place is not None else None
    return dataclasses.replace(error, at_line=at or error.line)


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
    where_of: dict[str, Where] = {}
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
    elif len(name.strip()) > MAX_NAME_CHARS:
        c.add("batch", "name", f"is {len(name.strip())} characters long; the maximum is {MAX_NAME_CHARS}")
        name = ""
    # A default nobody wrote is held to the server's limits rather than rejected by them.
    max_parallel = data.get("max_parallel", min(3, limits.max_parallel))
    timeout = as_int(c, "batch", "timeout", data.get("timeout", min(1800, limits.max_timeout)), 1, limits.max_timeout)
    retries = as_int(c, "batch", "retries", data.get("retries", 0), 0, limits.max_retries)
    backoff = as_number(c, "batch", "backoff", data.get("backoff", 2), 0, 3600)
    aggregation = data.get("aggregation") or ""
    if aggregation:
        as_choice(c, "batch", "aggregation", aggregation, AGGREGATIONS)
    cwd = _path(c, "batch", "cwd", data.get("cwd"))
    webhook = data.get("webhook") or ""
    if not isinstance(webhook, str) or not re.match(r"^https?://[^\s/]+", webhook) and webhook:
        c.add("batch", "webhook", f"must be an http(s) URL, got {shown(webhook)}")
        webhook = ""
    elif len(webhook) > MAX_WEBHOOK_CHARS:
        c.add("batch", "webhook", f"is {len(webhook)} characters long; the maximum is {MAX_WEBHOOK_CHARS}")
        webhook = ""
    elif webhook and not is_admin:
        # The server POSTs to it: an open URL would let anyone probe the server's network.
        c.add("batch", "webhook", "may only be set by an admin", admin_only=True)
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
        "webhook_format": as_choice(c, "batch", "webhook_format", data.get("webhook_format", "json"), WEBHOOK_FORMATS)
        or "json",
        "cwd": cwd,
        "workspace": read_workspace(c, data.get("workspace"), is_admin=is_admin, max_path_chars=MAX_CWD_CHARS),
        "budget_usd": _usd(c, "batch", "budget_usd", data.get("budget_usd")),
        "on_budget": as_choice(c, "batch", "on_budget", data.get("on_budget", ON_BUDGET[0]), ON_BUDGET) or ON_BUDGET[0],
    }
    defaults = _Defaults(
        agent=data.get("agent"),
        vars=batch_vars,
        timeout=timeout if "timeout" in data else None,
        retries=retries or 0,
    )
    return settings, defaults


def _usd(c: Collector, where, name: str, value: Any, task: str | None = None, allow_zero=False) -> float | None:
    """A budget or estimate in USD: a number above 0 (an estimate may be 0), at most MAX_BUDGET_USD."""
    if value is None:
        return None
    number = as_number(c, where, name, value, 0, MAX_BUDGET_USD, task)
    if number == 0 and not allow_zero:
        c.add(where, name, "must be more than 0 (leave it out for no budget)", task)
        return None
    return number


def _path(c: Collector, where: str | Where, name: str, value: Any, task: str | None = None) -> str:
    value = value or ""
    if not isinstance(value, str):
        c.add(where, name, f"must be a path, got {shown(value)}", task)
        return ""
    if len(value) > MAX_CWD_CHARS:
        c.add(where, name, f"is {len(value)} characters long; the maximum is {MAX_CWD_CHARS}", task)
        return ""
    return value


def _globs(c: Collector, where: Where, key: str, value: Any) -> tuple[str, ...]:
    """A task's `files`, each a pattern small enough to compare with the others quickly."""
    patterns = as_str_list(c, where, "files", value, key)
    if len(patterns) > MAX_FILES_PER_TASK:
        c.add(where, "files", f"has {len(patterns)} patterns; the maximum is {MAX_FILES_PER_TASK}", key)
        return ()
    for pattern in patterns:
        if len(pattern) > MAX_GLOB_CHARS:
            c.add(where, "files", f"pattern {shown(pattern)} is over {MAX_GLOB_CHARS} characters", key)
            return ()
        if len(planning.glob_segments(pattern)) > MAX_GLOB_SEGMENTS:
            c.add(where, "files", f"pattern {shown(pattern)} has more than {MAX_GLOB_SEGMENTS} segments", key)
            return ()
    return patterns


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


def _task(c: Collector, i: int, raw: Any, where_of: dict[str, Where], ctx: _TaskContext) -> TaskSpec | None:
    """One task, checked field by field; None when it cannot even be named."""
    place = Where(i, None, ctx.lines.get(i))
    if not isinstance(raw, dict):
        c.add(place, "", "must be a mapping with at least 'key'")
        return None
    key = raw.get("key")
    unnamed = not isinstance(key, str) or not KEY_RE.match(key)
    if unnamed:
        # Still checked field by field, under its place: every other mistake is reported in the same answer.
        c.add(place, "key", f"must be letters, digits, '_', '-' or '.' (100 at most), got {shown(key)}")
        key = None
    where = Where(i, key, ctx.lines.get(i))
    duplicate = not unnamed and key in where_of
    if duplicate:
        # Still checked field by field: every other mistake in it is reported in the same answer.
        c.add(where, "key", f"duplicate key: also used by {where_of[key]}", key)
    elif not unnamed:
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
    cwd = _path(c, where, "cwd", raw.get("cwd"), key)
    budget_usd = _usd(c, where, "budget_usd", raw.get("budget_usd"), key)
    estimate_usd = _usd(c, where, "estimate_usd", raw.get("estimate_usd"), key, allow_zero=True)
    depends_on = as_str_list(c, where, "depends_on", raw.get("depends_on"), key)
    files = _globs(c, where, key, raw.get("files"))
    if duplicate or unnamed:
        return None
    return TaskSpec(
        key=key,
        agent=agent,
        prompt=prompt,
        role=role,
        priority=_priority(c, where, key, raw.get("priority", "P1")),
        depends_on=depends_on,
        files=files,
        timeout=timeout or 1800,
        retries=retries or 0,
        cwd=cwd,
        estimate=estimate,
        budget_usd=budget_usd,
        estimate_usd=estimate_usd,
    )


def _task_agent(c: Collector, where: Where, key: str, agent: Any, ctx: _TaskContext):
    info = ctx.agents.get(agent) if isinstance(agent, str) else None
    if not agent:
        c.add(where, "agent", "is required (or set 'agent' on the batch)", key)
    elif info is None:
        known = ", ".join(sorted(ctx.agents)) or "none defined"
        c.add(where, "agent", f"unknown agent type {shown(agent)} (known: {known})", key)
    elif info.admin_only and not ctx.is_admin:
        c.add(where, "agent", f"agent type {agent!r} may only be launched by an admin", key, admin_only=True)
    return (agent if isinstance(agent, str) else ""), info


def _task_prompt(c: Collector, where: Where, key: str, raw: dict, ctx: _TaskContext) -> tuple[str, str]:
    """(role, prompt): the prompt filled into its role's template and its variables."""
    prompt = raw.get("prompt")
    prompt = "" if prompt is None else prompt
    if not isinstance(prompt, str):
        c.add(where, "prompt", f"must be text, got {type(prompt).__name__}", key)
        prompt = ""
    role = raw.get("role") or ""
    if not isinstance(role, str):
        c.add(where, "role", f"must be the name of a role, got {shown(role)}", key)
        role = ""
    elif len(role) > MAX_ROLE_CHARS:
        c.add(where, "role", f"is {len(role)} characters long; the maximum is {MAX_ROLE_CHARS}", key)
        role = ""
    task_vars = raw.get("vars") or {}
    if not isinstance(task_vars, dict):
        c.add(where, "vars", "must be a mapping of names to values", key)
        task_vars = {}
    variables = {**ctx.defaults.vars, **task_vars, "key": key}
    if role and role not in ctx.roles:
        known = ", ".join(sorted(ctx.roles)) or "none defined"
        c.add(where, "role", f"unknown role {shown(role)} (known: {known})", key)
        return role, prompt
    try:
        if role:
            prompt, unknown = render_prompt(ctx.roles[role], {**variables, "task": prompt}, limit=MAX_PROMPT_CHARS)
            for name in unknown:
                c.add(where, "vars", f"role {role!r} uses {{{{ {name} }}}} but no value is given", key)
        elif task_vars or ctx.defaults.vars:
            prompt, unknown = render_prompt(prompt, variables, limit=MAX_PROMPT_CHARS)
            for name in unknown:
                c.add(where, "prompt", f"uses {{{{ {name} }}}} but no value is given", key)
    except PromptTooLong as exc:
        c.add(where, "prompt", str(exc), key)
        return role, ""
    return role, prompt


def _priority(c: Collector, where: Where, key: str, value: Any) -> int:
    label = f"P{value}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
    priority = PRIORITIES.get(label.upper())
    if priority is None:
        c.add(where, "priority", f"must be P0, P1 or P2, got {shown(value)}", key)
        return 1
    return priority


def _check_graph(c: Collector, tasks: list[TaskSpec], where_of: Mapping[str, Where]) -> None:
    """Unknown dependencies, cycles and file conflicts: all of them, in one answer."""
    keys = {t.key for t in tasks}
    deps: dict[str, tuple[str, ...]] = {}
    for t in tasks:
        for dep in t.depends_on:
            if dep == t.key:
                c.add(where_of[t.key], "depends_on", "a task cannot depend on itself", t.key)
            elif dep not in keys:
                c.add(where_of[t.key], "depends_on", f"unknown dependency {shown(dep)}", t.key)
        # What is left is checked for cycles and conflicts as if the wrong dependencies were gone.
        deps[t.key] = tuple(d for d in t.depends_on if d in keys and d != t.key)
    cyclic = False
    for cycle in _cycles(deps):
        cyclic = True
        c.add(where_of[cycle[0]], "depends_on", "dependency cycle: " + " -> ".join(cycle), cycle[0])
    if cyclic:
        return  # which tasks may run at once is not known until the cycles are broken
    try:
        conflicts = planning.file_conflicts(
            deps, {t.key: t.files for t in tasks}, limit=planning.MAX_CONFLICTS_SHOWN + 1
        )
    except planning.TooManyScopes as exc:
        c.add("batch", "files", str(exc))
        return
    for conflict in conflicts[: planning.MAX_CONFLICTS_SHOWN]:
        c.add(
            where_of[conflict.second],
            "files",
            f"conflict: {conflict.describe()}; add a depends_on between them or narrow 'files'",
            conflict.second,
        )
    if len(conflicts) > planning.MAX_CONFLICTS_SHOWN:
        c.add("batch", "files", f"more file conflicts than the {planning.MAX_CONFLICTS_SHOWN} shown")


def _cycles(deps: dict[str, tuple[str, ...]], most: int = 10) -> list[list[str]]:
    """Up to `most` distinct dependency cycles: each found one is cut open and the search goes on."""
    graph = dict(deps)
    found = []
    while len(found) < most and (cycle := planning.find_cycle(graph)):
        found.append(cycle)
        head, after = cycle[-2], cycle[-1]
        graph[head] = tuple(d for d in graph[head] if d != after)
    return found
