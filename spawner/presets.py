"""Agent types and role prompt templates that ship with Spawner."""

from __future__ import annotations

AGENT_TYPES = [
    {
        "name": "claude-code",
        "description": "Claude Code, headless (claude -p)",
        "argv": ["claude", "-p", "{prompt}"],
        "prompt_via": "arg",
        "secret_names": [],
        "default_timeout": 1800,
    },
    {
        "name": "codex",
        "description": "OpenAI Codex CLI (codex exec)",
        "argv": ["codex", "exec", "{prompt}"],
        "prompt_via": "arg",
        "default_timeout": 1800,
    },
    {
        "name": "gemini",
        "description": "Gemini CLI (gemini -p)",
        "argv": ["gemini", "-p", "{prompt}"],
        "prompt_via": "arg",
        "default_timeout": 1800,
    },
    {
        "name": "aider",
        "description": "aider, one message, no questions",
        "argv": ["aider", "--yes-always", "--no-pretty", "--message", "{prompt}"],
        "prompt_via": "arg",
        "default_timeout": 1800,
    },
    {
        "name": "pytest",
        "description": "pytest; the prompt, if any, is one path or node id",
        "argv": ["pytest", "-q", "--", "{prompt}"],  # the prompt is a path, never an option
        "prompt_via": "arg",
        "prompt_kind": "path",  # pytest imports what it is given: confined to the run's directory
        "default_timeout": 900,
    },
    {
        "name": "ruff",
        "description": "ruff check; the prompt, if any, is one path",
        "argv": ["ruff", "check", "--", "{prompt}"],
        "prompt_via": "arg",
        "prompt_kind": "path",
        "default_timeout": 300,
    },
    {
        "name": "shell",
        "description": "sh -c PROMPT: the prompt is a shell script. Admins only.",
        "argv": ["sh", "-c", "{prompt}"],
        "prompt_via": "arg",
        "admin_only": True,
    },
]

# Presets whose prompt is a path (a data migration sets it on rows installed before the field).
PATH_PROMPT_TYPES = [t["name"] for t in AGENT_TYPES if t.get("prompt_kind") == "path"]

_ROLE_TAIL = "\n\nTask ({{ key }}):\n{{ task }}\n"
ROLES = {
    "explorer": "You are an explorer. Map the relevant code: files, entry points, data flow. "
    "Report what you found; change nothing." + _ROLE_TAIL,
    "implementer": "You are an implementer. Make the change described below, touching only the "
    "files in your scope, and keep the tests passing." + _ROLE_TAIL,
    "tester": "You are a tester. Write or run the tests that show whether the behaviour below "
    "holds; report each failure with its file and line." + _ROLE_TAIL,
    "reviewer": "You are a reviewer. Review the change below for bugs, security and clarity. "
    "Report findings with severity, file and line." + _ROLE_TAIL,
    "documenter": "You are a documenter. Update the documentation for the change below so a "
    "newcomer can use it." + _ROLE_TAIL,
    "debugger": "You are a debugger. Find the root cause of the failure below, explain it, and "
    "propose the smallest fix." + _ROLE_TAIL,
    "researcher": "You are a researcher. Answer the question below from the code and its history; "
    "cite the files you used." + _ROLE_TAIL,
}


def install(agent_type_model, role_model) -> tuple[int, int]:
    """Create the presets that are missing; never overwrite what an admin changed."""
    created_types = created_roles = 0
    # Migrations pass their historical model: leave out fields it does not have yet
    # (a later migration sets them).
    known = {f.name for f in agent_type_model._meta.get_fields()}
    for fields in AGENT_TYPES:
        fields = {k: v for k, v in fields.items() if k in known}
        _, created = agent_type_model.objects.get_or_create(name=fields.pop("name"), defaults=fields)
        created_types += created
    for name, template in ROLES.items():
        _, created = role_model.objects.get_or_create(name=name, defaults={"template": template})
        created_roles += created
    return created_types, created_roles
