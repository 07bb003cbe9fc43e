"""The real Claude Code CLI (`make agents`) fans out through Spawner's MCP server: configured with
`--mcp-config`, against the scripted model server, the model calls launch_batch and wait_batch, and
the CLI's final answer quotes the merged result the batch produced. Over stdio (`manage.py
spawner_mcp --user`) and over streamable HTTP with an API token (daphne serving spawner.asgi)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from spawner import selectors
from spawner.models import AgentRun, Batch
from tests.api.test_mcp import SPEC, server_env
from tests.browser.conftest import WebServer
from tests.conftest import ROOT
from tests.support import clis
from tests.support import model_server as ms

pytestmark = [pytest.mark.integration, pytest.mark.real_cli, pytest.mark.timeout(300)]

PROMPT = "Fan out the two reviews through Spawner and tell me the merged findings."
ALLOWED = "mcp__spawner__launch_batch,mcp__spawner__wait_batch"


def last_tool_result(request: ms.Request) -> str:
    """The text of the tool result the CLI sent back in this request (the last user message)."""
    messages = request.body["messages"]
    content = messages[-1]["content"]
    results = [c for c in content if isinstance(c, dict) and c.get("type") == "tool_result"]
    assert results, f"no tool result in the last message: {content!r:.2000}"
    return "\n".join(ms._texts(results[-1].get("content")))


def wait_for_it(request: ms.Request) -> ms.Turn:
    launched = json.loads(last_tool_result(request))
    return ms.tools(ms.call("mcp__spawner__wait_batch", {"batch_id": launched["batch_id"], "timeout_seconds": 120}))


def quote_the_merge(request: ms.Request) -> ms.Turn:
    ended = json.loads(last_tool_result(request))
    titles = sorted(f["title"] for f in ended["result"]["findings"])
    return ms.text(f"Batch #{ended['batch_id']} {ended['status']}; merged findings: {'; '.join(titles)}.")


@pytest.fixture
def claude():
    return clis.require("claude")


@pytest.fixture
def server():
    with ms.ModelServer() as s:
        yield s


@pytest.fixture
def work(tmp_path, settings):
    path = tmp_path / "work"
    path.mkdir()
    settings.SPAWNER_WORKDIR = path
    return path


def run_claude(claude, server, tmp_path, config: dict) -> dict:
    server.script(
        [
            ms.tools(ms.call("mcp__spawner__launch_batch", {"spec": SPEC})),
            wait_for_it,
            quote_the_merge,
        ],
        when="Fan out",
    )
    config_file = tmp_path / "mcp.json"
    config_file.write_text(json.dumps({"mcpServers": {"spawner": config}}))
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))},
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": server.url,
        "ANTHROPIC_API_KEY": ms.DUMMY_KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "MCP_TIMEOUT": "60000",
        "MCP_TOOL_TIMEOUT": "180000",
    }
    argv = [
        str(claude),
        "-p",
        PROMPT,
        "--mcp-config",
        str(config_file),
        "--strict-mcp-config",
        "--allowedTools",
        ALLOWED,
        "--output-format",
        "json",
    ]
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    return json.loads(done.stdout)


def check_fan_out(out: dict, server) -> None:
    batch = Batch.objects.get()
    assert batch.status == "succeeded" and batch.name == "mcp fan-out"
    assert sorted(AgentRun.objects.filter(batch=batch).values_list("key", "status")) == [
        ("alpha", "succeeded"),
        ("beta", "succeeded"),
    ]
    titles = sorted(f["title"] for f in selectors.aggregation_of(batch)["findings"])
    assert titles == ["alpha finding", "beta finding"]
    assert out["is_error"] is False, out
    assert out["result"] == f"Batch #{batch.id} succeeded; merged findings: alpha finding; beta finding."
    asked = server.agent_requests("anthropic")
    calls = [
        c["name"]
        for r in asked
        for m in r.body["messages"]
        if m["role"] == "assistant" and isinstance(m["content"], list)
        for c in m["content"]
        if c.get("type") == "tool_use"
    ]
    assert "mcp__spawner__wait_batch" in calls, calls
    answered = asked[-1].prompt_text()
    assert re.search(rf'"batch_id": ?{batch.id}\b', answered), "wait_batch's merged result reached the model"


def test_claude_code_fans_out_through_the_stdio_server(claude, cluster, server, work, tmp_path, member, agent_types):
    config = {
        "type": "stdio",
        "command": sys.executable,
        "args": [str(ROOT / "manage.py"), "spawner_mcp", "--user", member.username, "--workdir", str(work)],
        "env": {k: v for k, v in server_env(tmp_path).items() if k in ("DATABASE_URL", "SPAWNER_LOG_DIR", "PATH")}
        | {"SPAWNER_LOG_DIR": cluster.env["SPAWNER_LOG_DIR"], "DJANGO_SETTINGS_MODULE": "spawner.settings"},
    }
    check_fan_out(run_claude(claude, server, tmp_path, config), server)


def test_claude_code_fans_out_through_the_http_server(claude, cluster, server, work, tmp_path, member, token_for):
    from spawner.models import AgentType

    AgentType.objects.get_or_create(name="sh", defaults={"argv": ["sh", "-c", "{prompt}"]})
    web = WebServer({**cluster.env, "SPAWNER_WORKDIR": str(work)}, tmp_path / "daphne.log")
    try:
        web.wait_ready(timeout=120)  # a loaded machine starts Django slowly
        config = {
            "type": "http",
            "url": web.url + "/mcp",
            "headers": {"Authorization": f"Bearer {token_for(member, 'launch')}"},
        }
        check_fan_out(run_claude(claude, server, tmp_path, config), server)
    finally:
        web.stop()
