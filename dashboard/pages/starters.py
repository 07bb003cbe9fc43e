"""Starting points for the new-batch form: fan-out review, pipeline, waves and race, with this server's agents."""

from __future__ import annotations

from collections.abc import Mapping

import yaml

from spawner import selectors
from spawner.selectors import AgentInfo

CODING_AGENTS = ("claude-code", "codex", "gemini", "aider")


def _usable(agents: Mapping[str, AgentInfo], is_admin: bool) -> list[str]:
    return [n for n, a in agents.items() if a.available and (is_admin or not a.admin_only)]


def default_agent(agents: Mapping[str, AgentInfo], *, is_admin: bool) -> str:
    """A coding agent that can run here, else the first coding agent (shown as not available):
    these prompts are prose, which a tool such as pytest would take for a path."""
    usable = _usable(agents, is_admin)
    for name in CODING_AGENTS:
        if name in usable:
            return name
    return next((n for n in CODING_AGENTS if n in agents), next(iter(sorted(agents)), ""))


def _task(key, agent, role, prompt, roles, depends_on=(), files=(), priority="P1") -> dict:
    task = {"key": key, "agent": agent, "prompt": prompt, "priority": priority}
    if role in roles:
        task["role"] = role
    if depends_on:
        task["depends_on"] = list(depends_on)
    if files:
        task["files"] = list(files)
    return task


def review(agent: str, roles, agents) -> dict:
    aspects = [
        ("security", "injection, secrets, permissions"),
        ("performance", "queries, loops, memory"),
        ("clarity", "names, structure, tests"),
    ]
    tasks = [
        _task(f"review-{name}", agent, "reviewer", f"Review the last commit for {name}: {focus}.", roles)
        for name, focus in aspects
    ]
    tasks.append(
        _task(
            "summary",
            agent,
            "",
            "Merge the three reviews into one list, most severe first.",
            roles,
            depends_on=[t["key"] for t in tasks],
            priority="P0",
        )
    )
    return {"name": "Fan-out review", "max_parallel": 3, "aggregation": "merge", "tasks": tasks}


def pipeline(agent: str, roles, agents) -> dict:
    tasks = []
    for part in ("api", "ui"):
        tasks.append(
            _task(
                f"build-{part}",
                agent,
                "implementer",
                f"Implement the {part} half of the feature.",
                roles,
                files=[f"src/{part}/**"],
            )
        )
        tasks.append(
            _task(
                f"test-{part}",
                agent,
                "tester",
                f"Test the {part} half of the feature.",
                roles,
                depends_on=[f"build-{part}"],
                files=[f"tests/{part}/**"],
            )
        )
    return {"name": "Parallel pipeline", "max_parallel": 2, "aggregation": "all", "tasks": tasks}


def waves(agent: str, roles, agents) -> dict:
    tasks = [
        _task("explore", agent, "explorer", "Map the code the feature touches.", roles, priority="P0"),
        _task("models", agent, "implementer", "Add the models.", roles, ["explore"], ["app/models.py"]),
        _task("views", agent, "implementer", "Add the views.", roles, ["explore"], ["app/views.py"]),
        _task("tests", agent, "tester", "Test models and views.", roles, ["models", "views"], ["tests/**"]),
        _task("docs", agent, "documenter", "Document the feature.", roles, ["tests"], ["docs/**"]),
    ]
    return {"name": "Dependency waves", "max_parallel": 2, "aggregation": "merge", "tasks": tasks}


def race(agent: str, roles, agents) -> dict:
    racers = [a for a in CODING_AGENTS if a in agents][:3] or [agent]
    while len(racers) < 3:
        racers.append(racers[0])
    prompt = "Find the cause of the failing test and propose the smallest fix."
    tasks = [_task(f"try-{i + 1}", a, "debugger", prompt, roles) for i, a in enumerate(racers)]
    return {"name": "Race", "max_parallel": 3, "aggregation": "first_success", "tasks": tasks}


def demo(agent: str, roles, agents) -> dict:
    """Dependency waves acted out by the shell: runs on any server, no AI tool needed (admins)."""
    steps = [
        ("explore-api", "", 1.5),
        ("explore-db", "", 1.0),
        ("build", "explore-api,explore-db", 2.0),
        ("test", "build", 1.0),
        ("docs", "build", 0.5),
    ]
    tasks = [
        _task(
            key,
            "shell",
            "",
            f"echo {key} starts; sleep {seconds}; echo {key} done",
            roles,
            depends_on=[d for d in deps.split(",") if d],
        )
        for key, deps, seconds in steps
    ]
    return {"name": "Demo: waves with no AI tool", "max_parallel": 3, "aggregation": "all", "tasks": tasks}


def coding_example() -> str | None:
    """examples/parallel-coding.yaml as the YAML to paste: its repository paths made relative to
    this server's base directory. Its repository and agent type come from `manage.py spawner_demo`
    (`make run` runs it)."""
    data = selectors.example_spec("parallel-coding")
    if data is None:
        return None
    head = "# Needs var/demo-repo and the coding-demo agent type: `python manage.py spawner_demo` (make run does it).\n"
    return head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


# Starting points given as YAML (they use fields the form has not, such as `workspace`).
YAML_STARTERS = {
    "coding": (
        "Parallel coding (no AI tool)",
        "Scripted agents edit a demo repository, each in its own worktree: diffs, a scope warning, "
        "a conflict, the merge queue.",
        coding_example,
    ),
}

STARTERS = {
    "review": ("Fan-out / fan-in review", "Three reviewers in parallel, one summary after them.", review),
    "pipeline": ("Parallel pipeline", "Two build → test chains side by side.", pipeline),
    "waves": ("Dependency waves", "Explore, then build in parallel, then test, then document.", waves),
    "race": ("Race", "The same problem to several agents; the first success wins.", race),
    "demo": ("Demo (no AI tool)", "Waves of shell steps that sleep: try Spawner on any server (admins).", demo),
}


def build_text(name: str) -> str | None:
    """The YAML of a starting point given as YAML, else None."""
    return YAML_STARTERS[name][2]() if name in YAML_STARTERS else None


# Starting points only an admin may launch (their steps run in the server's shell).
ADMIN_ONLY = {"demo"}


def offered(agents: Mapping[str, AgentInfo], *, is_admin: bool) -> list[dict]:
    """The starting points to show: each with why this person cannot use it (`disabled`), or a note
    when it would plan with agent types this server cannot run yet (the plan says which)."""
    usable = _usable(agents, is_admin)
    coding = any(name in usable for name in CODING_AGENTS)
    found = []
    for key, (title, about, _) in STARTERS.items():
        disabled = note = ""
        if key in ADMIN_ONLY and not is_admin:
            disabled = "admins only: its steps run in the server's shell"
        elif key not in ADMIN_ONLY and not coding:
            note = "no coding agent can run on this server yet: the plan shows which is missing"
        found.append({"key": key, "title": title, "about": about, "disabled": disabled, "note": note})
    for key, (title, about, _) in YAML_STARTERS.items():
        disabled = "" if "coding-demo" in agents else "run python manage.py spawner_demo first"
        found.append({"key": key, "title": title, "about": about, "disabled": disabled, "note": ""})
    return found


def coding_note(agents: Mapping[str, AgentInfo], *, is_admin: bool) -> str:
    """Said under the starting points when none of their coding agents can run here ('' otherwise)."""
    usable = _usable(agents, is_admin)
    if any(name in usable for name in CODING_AGENTS):
        return ""
    names = ", ".join(n for n in CODING_AGENTS if n in agents) or "none is defined"
    return (
        f"No coding agent can run on this server ({names}): the starting points that use one show "
        "their plan, with the agent types missing, but cannot launch until an admin installs one."
    )


def build(name: str, agents: Mapping[str, AgentInfo], roles, *, is_admin: bool) -> dict | None:
    if name not in STARTERS or (name in ADMIN_ONLY and not is_admin):
        return None
    agent = default_agent(agents, is_admin=is_admin)
    data = STARTERS[name][2](agent, set(roles), agents)
    return {"mode": "parallel", "retries": 0, "failure_policy": "continue", **data}
