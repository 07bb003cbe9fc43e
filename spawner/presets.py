"""Agent types and role prompt templates that ship with Spawner."""

from __future__ import annotations

# Coding agents: the prompt goes on standard input, so it can never be read as an option
# (`claude -p "--version"` printed the version); the JSON output mode is on, so the final
# message can become the run's result (`output_format`); the permission mode lets a headless
# agent edit files in its working directory and nothing outside it. Verified against the
# real CLIs (tests/spawner/test_real_clis.py): claude-code, codex, gemini and aider.
# `rate_limit_pattern`: what each CLI prints when its API answered 429 and it gave up (after
# its own retries), so such a run waits and is queued again instead of failing
# (tests/spawner/test_cli_rate_limits.py, on recorded output).
CLAUDE_RESULT_HINT = (
    "Spawner runs you headless. Your result file (SPAWNER_RESULT_FILE) is {result_file}: "
    "you may write your result there as JSON with the Write tool."
)
CLAUDE_RATE_LIMIT = r'"api_error_status":\s*429\b|API Error: Request rejected \(429\)'
CODEX_RATE_LIMIT = r'"message":\s*"exceeded retry limit, last status: 429'
# Gemini CLI 0.61.0 ends with {"error": {..., "code": 429}} (and exits 429 % 256 = 173) whatever the
# API's message; the documented messages stay for other output formats.
GEMINI_RATE_LIMIT = (
    r'"code":\s*429\b|'
    r"RESOURCE_EXHAUSTED|\b429\b[^\n]{0,40}(?:resource exhausted|too many requests)|"
    r"exhausted your capacity|exceeded your current quota"
)
AIDER_RATE_LIMIT = r"litellm\.RateLimitError|The API provider has rate limited you"
CODING_AGENTS = {
    "claude-code": {
        # acceptEdits: edits inside the working directory are accepted; anything that would ask
        # (a write outside it, most shell commands) is denied, as nobody answers with -p.
        # The one exception: the run's own result file.
        "argv": [
            "claude",
            "-p",
            "--output-format",
            "json",
            "--permission-mode",
            "acceptEdits",
            "--allowedTools=Edit(/{result_file})",
            "--append-system-prompt",
            CLAUDE_RESULT_HINT,
        ],
        "output_format": "claude-json",
        # Claude Code 2.1.332 exits 1 with a result whose api_error_status is 429.
        "rate_limit_pattern": CLAUDE_RATE_LIMIT,
    },
    "codex": {
        # The sandbox lets commands write in the working directory only (not /tmp, not $TMPDIR);
        # exec never asks for approval. `-` reads the prompt from stdin.
        "argv": [
            "codex",
            "exec",
            "--json",
            "--sandbox",
            "workspace-write",
            "--skip-git-repo-check",
            "-c",
            'approval_policy="never"',
            "-c",
            "sandbox_workspace_write.exclude_slash_tmp=true",
            "-c",
            "sandbox_workspace_write.exclude_tmpdir_env_var=true",
            "-",
        ],
        "output_format": "codex-jsonl",
        # Codex 0.169.0 exits 1 with an error event (not its "Reconnecting... n/5" ones).
        "rate_limit_pattern": CODEX_RATE_LIMIT,
    },
    "gemini": {
        # With stdin not a terminal and no -p, gemini runs headless on what stdin holds. auto_edit:
        # file edits inside the workspace (the working directory) are accepted, paths outside it
        # refused; the shell tool is not offered at all.
        "argv": ["gemini", "--output-format", "json", "--approval-mode", "auto_edit", "--skip-trust"],
        "output_format": "gemini-json",
        # Gemini CLI 0.61.0 retries a 429 itself (10 attempts by default), then exits with its JSON error.
        "rate_limit_pattern": GEMINI_RATE_LIMIT,
    },
    "aider": {
        # The prompt is a file, never an option. aider prints no JSON: its "Tokens: … Cost: …"
        # lines are read for the usage, and its last answer for the result (aider-text).
        # --no-auto-commits: Spawner commits the worktree itself (and aider's commit message would
        # be one more model call after its answer, whose errors would read like a give-up).
        "argv": [
            "aider",
            "--yes-always",
            "--no-pretty",
            "--no-check-update",
            "--no-auto-commits",
            "--message-file",
            "{prompt_file}",
        ],
        "prompt_via": "file",
        "output_format": "aider-text",
        # aider 0.86.2 prints litellm's error after each of its retries, then exits 0: its output
        # format reports the give-up (agent_output.parse_aider), and this pattern says it was a
        # rate limit.
        "rate_limit_pattern": AIDER_RATE_LIMIT,
    },
}
# What these presets were before (a data migration moves rows that still hold them).
OLD_CODING_ARGV = {
    "claude-code": ["claude", "-p", "{prompt}"],
    "codex": ["codex", "exec", "{prompt}"],
    "gemini": ["gemini", "-p", "{prompt}"],
    "aider": ["aider", "--yes-always", "--no-pretty", "--message", "{prompt}"],
}

AGENT_TYPES = [
    {
        "name": "claude-code",
        "description": "Claude Code, headless (claude -p), prompt on stdin",
        "prompt_via": "stdin",
        "secret_names": [],
        "default_timeout": 1800,
        **CODING_AGENTS["claude-code"],
    },
    {
        "name": "codex",
        "description": "OpenAI Codex CLI (codex exec), prompt on stdin",
        "prompt_via": "stdin",
        "default_timeout": 1800,
        **CODING_AGENTS["codex"],
    },
    {
        "name": "gemini",
        "description": "Gemini CLI, headless, prompt on stdin",
        "prompt_via": "stdin",
        "default_timeout": 1800,
        **CODING_AGENTS["gemini"],
    },
    {
        "name": "aider",
        "description": "aider, one message from a file, no questions",
        "default_timeout": 1800,
        **CODING_AGENTS["aider"],
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

# How any agent hands back what it found (README: Structured results and fan-in).
RESULT_INSTRUCTIONS = (
    "\n\nWhen you are done, hand back your result as JSON in this format: "
    '{"summary": "one paragraph", "verdict": "pass | warn | fail", "findings": '
    '[{"severity": "critical | high | medium | low | info", "title": "...", "file": "path", '
    '"line": 1, "detail": "..."}]}. '
    "Write it to the file named by the SPAWNER_RESULT_FILE environment variable; if you cannot "
    "write that file, end your final message with the same JSON in a fenced ```json block."
)
_ROLE_TAIL = RESULT_INSTRUCTIONS + "\n\nTask ({{ key }}):\n{{ task }}\n"
ROLE_TEXT = {
    "explorer": "You are an explorer. Map the relevant code: files, entry points, data flow. "
    "Report what you found; change nothing.",
    "implementer": "You are an implementer. Make the change described below, touching only the "
    "files in your scope, and keep the tests passing.",
    "tester": "You are a tester. Write or run the tests that show whether the behaviour below "
    "holds; report each failure with its file and line.",
    "reviewer": "You are a reviewer. Review the change below for bugs, security and clarity. "
    "Report findings with severity, file and line.",
    "documenter": "You are a documenter. Update the documentation for the change below so a newcomer can use it.",
    "debugger": "You are a debugger. Find the root cause of the failure below, explain it, and "
    "propose the smallest fix.",
    "researcher": "You are a researcher. Answer the question below from the code and its history; "
    "cite the files you used.",
}
ROLES = {name: text + _ROLE_TAIL for name, text in ROLE_TEXT.items()}
# The templates before they said how to hand back a result (a data migration updates unchanged rows).
OLD_ROLES = {name: text + "\n\nTask ({{ key }}):\n{{ task }}\n" for name, text in ROLE_TEXT.items()}


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
