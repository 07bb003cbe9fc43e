"""The real coding-agent CLIs (`make agents` installs them in .cache) set up for tests:
their preset agent types pointed at a scripted model server, with dummy keys and a home of their own."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from spawner import presets
from tests.support import model_server

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".cache" / "agents" / "node_modules" / ".bin"
AIDER = ROOT / ".cache" / "aider" / "bin" / "aider"


def require(name: str) -> Path:
    """The CLI's path; a test without it skips, except with CI=true, where it fails."""
    path = AIDER if name == "aider" else BIN / name
    if not os.access(path, os.X_OK):
        message = f"{path} is not installed: run `make agents`"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true, so this fails)")
        pytest.skip(message)
    return path


def preset(name: str) -> dict:
    return next(dict(t) for t in presets.AGENT_TYPES if t["name"] == name)


def install_claude(server: model_server.ModelServer, home: Path):
    """The claude-code preset as shipped, but for the binary in .cache and the scripted server."""
    from spawner.models import AgentType

    fields = preset("claude-code")
    fields["argv"] = [str(require("claude")), *fields["argv"][1:]]
    home.mkdir(parents=True, exist_ok=True)
    fields["env"] = {
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": server.url,
        "ANTHROPIC_API_KEY": model_server.DUMMY_KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    name = fields.pop("name")
    agent_type, _ = AgentType.objects.update_or_create(name=name, defaults=fields)
    return agent_type


CODEX_CONFIG = """model = "scripted-model"
model_provider = "scripted"

[model_providers.scripted]
name = "scripted"
base_url = "{url}/v1"
env_key = "OPENAI_API_KEY"
wire_api = "responses"
"""


def install_codex(server: model_server.ModelServer, home: Path):
    """The codex preset as shipped; its CODEX_HOME's config.toml names the scripted server as provider."""
    from spawner.models import AgentType

    fields = preset("codex")
    fields["argv"] = [str(require("codex")), *fields["argv"][1:]]
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(CODEX_CONFIG.format(url=server.url))
    fields["env"] = {"CODEX_HOME": str(home), "HOME": str(home), "OPENAI_API_KEY": model_server.DUMMY_KEY}
    name = fields.pop("name")
    agent_type, _ = AgentType.objects.update_or_create(name=name, defaults=fields)
    return agent_type


def gemini_settings(max_attempts: int | None = None) -> dict:
    """Gemini CLI's settings.json: API-key auth (with GOOGLE_GEMINI_BASE_URL set and no auth
    selected, Gemini CLI 0.61.0 picks "gateway" and refuses it: "Invalid auth method selected."),
    no usage statistics, no update checks; `max_attempts`: its own retries of the main model."""
    settings: dict = {
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": False},
        "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
    }
    if max_attempts is not None:
        settings["general"]["maxAttempts"] = max_attempts
    return settings


def install_gemini(server: model_server.ModelServer, home: Path, model: str = "", max_attempts: int | None = None):
    """The gemini preset as shipped, the Gemini API behind the scripted server (GOOGLE_GEMINI_BASE_URL)
    with a dummy key. No `model`: Gemini CLI's own choice (its router asks a flash-lite model first)."""
    from spawner.models import AgentType

    fields = preset("gemini")
    fields["argv"] = [str(require("gemini")), *fields["argv"][1:]]
    (home / ".gemini").mkdir(parents=True, exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(gemini_settings(max_attempts), indent=2))
    fields["env"] = {
        "HOME": str(home),
        "GEMINI_API_KEY": model_server.DUMMY_KEY,
        "GOOGLE_GEMINI_BASE_URL": server.url,
    }
    if model:
        fields["env"]["GEMINI_MODEL"] = model
    name = fields.pop("name")
    agent_type, _ = AgentType.objects.update_or_create(name=name, defaults=fields)
    return agent_type


def install_aider(server: model_server.ModelServer, home: Path, model: str = "openai/gpt-4o"):
    """The aider preset as shipped, its model behind the scripted server's chat completions (aider's
    environment settings: no options added). No commits of its own, nothing asked or sent elsewhere."""
    from spawner.models import AgentType

    fields = preset("aider")
    fields["argv"] = [str(require("aider")), *fields["argv"][1:]]
    home.mkdir(parents=True, exist_ok=True)
    fields["env"] = {
        "HOME": str(home),
        "OPENAI_API_BASE": f"{server.url}/v1",
        "OPENAI_API_KEY": model_server.DUMMY_KEY,
        "AIDER_MODEL": model,
        "AIDER_AUTO_COMMITS": "false",
        "AIDER_GITIGNORE": "false",
        "AIDER_ANALYTICS": "false",
        "AIDER_SHOW_RELEASE_NOTES": "false",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    name = fields.pop("name")
    agent_type, _ = AgentType.objects.update_or_create(name=name, defaults=fields)
    return agent_type


def git_repo(path: Path, files: dict[str, str]) -> Path:
    """A small committed repository: the run's working directory."""
    path.mkdir(parents=True)
    for rel, content in files.items():
        (path / rel).write_text(content)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "start"]):
        subprocess.run(["git", *args], cwd=path, env=env, check=True, timeout=30)
    return path


FIXTURES = ROOT / "tests" / "fixtures" / "cli"


def record(run, name: str) -> None:
    """With SPAWNER_RECORD_CLI_FIXTURES=1, keep the run's log (the CLI's real output, stdout and
    stderr interleaved) as tests/fixtures/cli/<name>.log, for the parser's tests."""
    if os.environ.get("SPAWNER_RECORD_CLI_FIXTURES") != "1":
        return
    attempt = run.attempts.get(number=run.attempt)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    (FIXTURES / f"{name}.log").write_bytes(Path(attempt.log_path).read_bytes())
