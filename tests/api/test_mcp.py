"""Spawner's MCP server, driven by the `mcp` SDK's own client: over stdio (`manage.py spawner_mcp`,
which starts its own cluster) and over streamable HTTP (daphne serving spawner.asgi, with API
tokens), each listing the tools, planning a bad spec, launching a batch, waiting for it with progress
notifications and reading its merged result; and what each refuses. In this process too (the SDK's
in-memory transport, no server): the scope planning needs, and the cost to confirm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import anyio
import httpx
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from spawner.engine import cluster as clusters
from spawner.models import Batch
from tests.browser.conftest import WebServer
from tests.conftest import CLUSTER_ENV, ROOT, database_url_for_subprocess
from tests.spawner.helpers import wait_for

pytestmark = pytest.mark.timeout(240)  # the servers' tests are `integration`; the in-process ones are not

TOOLS = {
    "plan_batch",
    "launch_batch",
    "batch_status",
    "wait_batch",
    "get_result",
    "cancel",
    "retry",
    "list_escalations",
}


def finding_task(key: str, title: str) -> dict:
    result = {"summary": key, "verdict": "pass", "findings": [{"severity": "low", "title": title, "file": "a.py"}]}
    return {"key": key, "prompt": f"sleep 0.3; echo '{json.dumps(result)}' > $SPAWNER_RESULT_FILE"}


SPEC = {
    "name": "mcp fan-out",
    "agent": "sh",
    "aggregation": "merge",
    "tasks": [finding_task("alpha", "alpha finding"), finding_task("beta", "beta finding")],
}
READ_MAY_NOT_PLAN = "this token's scope is read: it may not plan batches (make a token with the launch scope)"
BAD_SPEC = "name: bad\nagent: sh\ntasks:\n  - key: one\n    prompt: echo one\n  - key: two\n    agent: nope\n"


def data(result) -> dict:
    """A tool result's data: the structured content, and the same as the text the agent reads."""
    assert result.structuredContent is not None, result
    assert json.loads(result.content[0].text) == result.structuredContent
    return result.structuredContent


async def fan_out(session: ClientSession) -> dict:
    """What an agent does: list, plan a bad spec, launch, wait (with progress), read the merged result."""
    listed = await session.list_tools()
    assert {t.name for t in listed.tools} == TOOLS

    bad = await session.call_tool("plan_batch", {"spec": BAD_SPEC})
    assert bad.isError
    errors = data(bad)["errors"]
    assert [(e["task"], e["field"], e["line"]) for e in errors] == [("two", "agent", 6)], errors
    assert "Traceback" not in bad.content[0].text
    refused = await session.call_tool("launch_batch", {"spec": BAD_SPEC})
    assert refused.isError and "nothing was launched" in data(refused)["error"]

    planned = data(await session.call_tool("plan_batch", {"spec": SPEC}))
    assert planned["tasks"] == 2 and planned["waves"] == [["alpha", "beta"]]

    launched = await session.call_tool("launch_batch", {"spec": SPEC, "idempotency_key": "fan-out-1"})
    assert not launched.isError, launched.content[0].text
    batch_id = data(launched)["batch_id"]
    again = data(await session.call_tool("launch_batch", {"spec": SPEC, "idempotency_key": "fan-out-1"}))
    assert (again["batch_id"], again["launched"]) == (batch_id, False), "the same key never launches twice"

    progress: list[tuple[float, float | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total))

    waited = await session.call_tool(
        "wait_batch",
        {"batch_id": batch_id, "timeout_seconds": 120},
        read_timeout_seconds=timedelta(seconds=150),
        progress_callback=on_progress,
    )
    ended = data(waited)
    outcome = [(r["key"], r["error"], r["output_tail"]) for r in ended["summary"]["runs"]]
    assert ended["ended"] and ended["status"] == "succeeded", outcome
    assert progress and progress[-1] == (2, 2), progress
    assert [p[0] for p in progress] == sorted({p[0] for p in progress}), "progress only grows"
    merged = ended["result"]
    assert merged["strategy"] == "merge"
    assert sorted(f["title"] for f in merged["findings"]) == ["alpha finding", "beta finding"]

    result = data(await session.call_tool("get_result", {"batch_id": batch_id}))
    assert result["result"] == merged
    markdown = data(await session.call_tool("get_result", {"batch_id": batch_id, "format": "markdown"}))
    assert "alpha finding" in markdown["markdown"]
    status = data(await session.call_tool("batch_status", {"batch_id": batch_id}))
    assert {r["key"]: r["status"] for r in status["runs"]} == {"alpha": "succeeded", "beta": "succeeded"}
    assert data(await session.call_tool("list_escalations", {"batch_id": batch_id}))["count"] == 0

    over = await session.call_tool("cancel", {"batch_id": batch_id})
    assert over.isError and "Traceback" not in over.content[0].text
    missing = await session.call_tool("batch_status", {"batch_id": 999_999})
    assert missing.isError and data(missing)["error"] == "no batch #999999"
    nothing = await session.call_tool("retry", {"batch_id": batch_id})
    assert nothing.isError and data(nothing)["error"] == "no run of this batch has failed"
    return {"batch_id": batch_id, "merged": merged}


def server_env(tmp_path) -> dict[str, str]:
    return {
        **os.environ,
        **CLUSTER_ENV,
        "DATABASE_URL": database_url_for_subprocess(),
        "SPAWNER_LOG_DIR": str(tmp_path / "logs"),
        "SPAWNER_WORKSPACE_DIR": str(tmp_path / "workspaces"),
    }


# --- stdio --------------------------------------------------------------------------------------


def stdio_params(tmp_path, *args: str, env: dict | None = None) -> StdioServerParameters:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return StdioServerParameters(
        command=sys.executable,
        args=[str(ROOT / "manage.py"), "spawner_mcp", *args],
        env={**server_env(tmp_path), **(env or {})},
        cwd=str(work),
    )


async def over_stdio(params: StdioServerParameters, errlog, work) -> dict:
    async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        return await work(session)


@pytest.mark.integration
def test_stdio_server_starts_a_cluster_and_fans_out(transactional_db, agent_types, member, tmp_path, settings):
    """No web server and no cluster running: the stdio server starts one at the launch, and stops it
    when the agent closes it."""
    settings.SPAWNER = {**settings.SPAWNER, "LOG_DIR": tmp_path / "logs"}
    assert not clusters.alive()
    with open(tmp_path / "stdio.log", "w") as errlog:
        out = anyio.run(over_stdio, stdio_params(tmp_path, "--user", member.username), errlog, fan_out)

    batch = Batch.objects.get(id=out["batch_id"])
    assert (batch.status, batch.owner, batch.name) == ("succeeded", member, "mcp fan-out")
    assert Batch.objects.count() == 1, "the bad spec and the repeated key launched nothing"
    assert "acting as mia (admin)" in (tmp_path / "stdio.log").read_text()
    wait_for(lambda: not clusters.alive(), timeout=60, what="the cluster the server started to stop")


@pytest.mark.integration
def test_stdio_server_acts_as_its_token_and_refuses_without_one(transactional_db, viewer, tmp_path):
    from asgiref.sync import sync_to_async

    from spawner import services

    def command(*args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "spawner_mcp", *args],
            env={**{k: v for k, v in server_env(tmp_path).items() if k != "SPAWNER_TOKEN"}, **env},
            input="",
            capture_output=True,
            text=True,
            timeout=60,
        )

    nobody = command()
    assert nobody.returncode != 0 and "--user NAME, or a personal API token in SPAWNER_TOKEN" in nobody.stderr
    assert nobody.stdout == "", "stdout is the protocol's: nothing else is written there"
    wrong = command(SPAWNER_TOKEN="spn_not-a-token")
    assert wrong.returncode != 0 and "SPAWNER_TOKEN is not a valid API token" in wrong.stderr
    unknown = command("--user", "nobody-here")
    assert unknown.returncode != 0 and "no active user 'nobody-here'" in unknown.stderr

    read_row, read_token = services.token_create(user=viewer, name="read", scope="read")

    async def read_only(session: ClientSession) -> None:
        assert {t.name for t in (await session.list_tools()).tools} == TOOLS
        refused = await session.call_tool("launch_batch", {"spec": SPEC})
        assert refused.isError and data(refused)["error"].startswith("this token's scope is read: it may not launch")
        escalations = data(await session.call_tool("list_escalations", {}))
        assert escalations == {"count": 0, "items": []}
        await sync_to_async(services.token_revoke)(token_id=read_row.id, user=viewer)
        revoked = await session.call_tool("list_escalations", {})
        assert revoked.isError and "the API token is not valid" in data(revoked)["error"]

    with open(tmp_path / "stdio.log", "w") as errlog:
        anyio.run(over_stdio, stdio_params(tmp_path, env={"SPAWNER_TOKEN": read_token}), errlog, read_only)
    assert Batch.objects.count() == 0


# --- streamable HTTP ----------------------------------------------------------------------------


@pytest.fixture
def web(cluster, tmp_path, settings, agent_types):
    work = tmp_path / "work"
    work.mkdir()
    settings.SPAWNER_WORKDIR = work
    env = {**cluster.env, "SPAWNER_WORKDIR": str(work)}
    server = WebServer(env, tmp_path / "daphne.log")
    try:
        server.wait_ready(timeout=120)  # a loaded machine starts Django slowly
        yield server
    finally:
        server.stop()


async def over_http(url: str, token: str, work):
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=180)) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        return await work(session)


@pytest.mark.integration
def test_http_server_needs_a_token_and_fans_out(web, member, viewer, token_for):
    url = web.url + "/mcp"
    hello = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    accept = {"Accept": "application/json, text/event-stream"}
    for headers in ({}, {"Authorization": "Bearer spn_wrong"}, {"Authorization": "Basic eDp5"}):
        refused = httpx.post(url, json=hello, headers={**accept, **headers}, timeout=30)
        assert refused.status_code == 401, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["www-authenticate"] == 'Bearer realm="spawner"'
        assert "Authorization: Bearer spn_" in refused.json()["detail"]
    elsewhere = httpx.post(url, json=hello, headers={**accept, "Origin": "http://evil.example"}, timeout=30)
    assert elsewhere.status_code == 403
    rebound = httpx.post(url, json=hello, headers={**accept, "Host": "attacker.example"}, timeout=30)
    assert rebound.status_code == 400 and "attacker.example" in rebound.json()["detail"]

    out = anyio.run(over_http, url, token_for(member, "launch"), fan_out)
    batch = Batch.objects.get(id=out["batch_id"])
    assert (batch.status, batch.owner) == ("succeeded", member)

    async def read_only(session: ClientSession) -> None:
        refused = await session.call_tool("launch_batch", {"spec": SPEC})
        assert refused.isError and data(refused)["scope"] == "read"
        assert "make a token with the launch scope" in data(refused)["error"]
        cancel = await session.call_tool("cancel", {"batch_id": out["batch_id"]})
        assert cancel.isError and data(cancel)["error"].startswith("this token's scope is read: it may not cancel")
        status = data(await session.call_tool("batch_status", {"batch_id": out["batch_id"]}))
        assert status["status"] == "succeeded"
        plan = await session.call_tool("plan_batch", {"spec": SPEC})  # as POST /api/batches/plan: launch scope
        assert plan.isError and data(plan)["scope"] == "read"
        assert data(plan)["error"] == READ_MAY_NOT_PLAN

    anyio.run(over_http, url, token_for(member, "read"), read_only)

    async def no_permission(session: ClientSession) -> None:
        refused = await session.call_tool("launch_batch", {"spec": SPEC})
        assert refused.isError and data(refused)["error"] == "not allowed: you need the permission to launch batches"

    anyio.run(over_http, url, token_for(viewer, "launch"), no_permission)
    assert Batch.objects.count() == 1
    daphne_log = web.log_path.read_text()
    assert "SynchronousOnlyOperation" not in daphne_log and "Traceback" not in daphne_log, daphne_log[-3000:]


@pytest.mark.integration
def test_a_revoked_token_is_refused_at_once(web, member, token_for):
    from spawner import services
    from spawner.models import ApiToken

    token = token_for(member, "read")
    url = web.url + "/mcp"

    async def lists(session: ClientSession) -> int:
        return len((await session.list_tools()).tools)

    assert anyio.run(over_http, url, token, lists) == len(TOOLS)
    services.token_revoke(token_id=ApiToken.objects.get(user=member).id, user=member)
    with pytest.raises(BaseException) as failed:  # the SDK's client raises inside its task group
        anyio.run(over_http, url, token, lists)
    statuses = [e.response.status_code for e in leaves(failed.value) if isinstance(e, httpx.HTTPStatusError)]
    assert statuses == [401], failed.value
    hello = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    raw = httpx.post(url, json=hello, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert raw.status_code == 401


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


FOLLOW_SPEC = """\
name: mcp follow
agent: sh
tasks:
  - {key: slow, prompt: "sleep 60"}
  - {key: broken, prompt: "echo broken; exit 3", priority: P0}
"""


@pytest.mark.integration
def test_http_wait_times_out_then_retry_escalations_and_cancel(web, member, token_for):
    """A batch still running when wait_batch's timeout comes: it says so; a failed P0 run is an open
    escalation; retry and cancel act on it."""

    async def follow(session: ClientSession) -> int:
        batch_id = data(await session.call_tool("launch_batch", {"spec": FOLLOW_SPEC}))["batch_id"]
        for _ in range(60):  # until `broken` has failed (and escalated)
            status = data(await session.call_tool("batch_status", {"batch_id": batch_id}))
            if {r["key"]: r["status"] for r in status["runs"]}["broken"] == "failed":
                break
            await anyio.sleep(0.5)
        waited = data(await session.call_tool("wait_batch", {"batch_id": batch_id, "timeout_seconds": 1}))
        assert (waited["ended"], waited["status"], waited["result"]) == (False, "running", None), waited
        assert waited["next"] == f"still running: call wait_batch(batch_id={batch_id}) again"
        assert 1 <= waited["waited_seconds"] < 30
        not_yet = await session.call_tool("get_result", {"batch_id": batch_id})
        assert not_yet.isError and "no combined result yet" in data(not_yet)["error"]

        escalations = data(await session.call_tool("list_escalations", {"batch_id": batch_id}))
        assert [(e["run_key"], e["kind"], e["state"]) for e in escalations["items"]] == [
            ("broken", "p0_failed", "open")
        ]
        retried = data(await session.call_tool("retry", {"batch_id": batch_id, "run_key": "broken"}))
        assert retried["retried"] == ["broken"] and retried["detail"] == "attempt 2 is queued"
        unknown = await session.call_tool("retry", {"batch_id": batch_id, "run_key": "nope"})
        assert unknown.isError and data(unknown)["error"] == f"batch #{batch_id} has no run 'nope'"

        cancelled = data(await session.call_tool("cancel", {"batch_id": batch_id}))
        assert cancelled["detail"].startswith(f"cancelling batch #{batch_id}")
        ended = data(await session.call_tool("wait_batch", {"batch_id": batch_id, "timeout_seconds": 60}))
        assert (ended["ended"], ended["status"]) == (True, "cancelled"), ended
        return batch_id

    batch_id = anyio.run(over_http, web.url + "/mcp", token_for(member, "launch"), follow)
    batch = Batch.objects.get(id=batch_id)
    assert batch.status == "cancelled" and batch.runs.get(key="broken").attempt == 2


# --- in this process (the SDK's in-memory transport): scopes and the cost to confirm ----------------


async def in_memory(identity, work, base_dir):
    from mcp.shared.memory import create_connected_server_and_client_session

    from spawner.mcp import tools

    server = tools.build_server(identity=identity, base_dir=base_dir)
    async with create_connected_server_and_client_session(server) as session:
        return await work(session)


def as_token(token: str):
    from spawner.mcp import tools

    return tools.identity_from_token(token)


def test_plan_needs_the_launch_scope_as_the_rest_api_does(transactional_db, agent_types, member, token_for, tmp_path):
    from tests.api.conftest import Api

    read_token, launch_token = token_for(member, "read"), token_for(member, "launch")

    async def plan(session: ClientSession):
        return await session.call_tool("plan_batch", {"spec": SPEC})

    refused = anyio.run(in_memory, as_token(read_token), plan, tmp_path)
    assert refused.isError and data(refused) == {"error": READ_MAY_NOT_PLAN, "scope": "read"}
    assert Api(read_token).post("/batches/plan", SPEC).status_code == 403  # the REST API refuses it the same

    planned = anyio.run(in_memory, as_token(launch_token), plan, tmp_path)
    assert not planned.isError and data(planned)["waves"] == [["alpha", "beta"]]
    assert Api(launch_token).post("/batches/plan", SPEC).json()["waves"] == [["alpha", "beta"]]
    assert not Batch.objects.exists()


def costly(*estimates: float) -> dict:
    """SPEC with each task's declared estimate (the plan's estimate is their sum)."""
    return {**SPEC, "tasks": [{**t, "estimate_usd": e} for t, e in zip(SPEC["tasks"], estimates, strict=True)]}


def test_a_launch_above_the_cost_to_confirm_needs_confirm_cost(
    transactional_db, agent_types, member, token_for, tmp_path, settings
):
    settings.SPAWNER = {**settings.SPAWNER, "CONFIRM_COST_USD": 1.0}

    async def launches(session: ClientSession) -> list:
        return [
            await session.call_tool("launch_batch", {"spec": costly(0.75, 0.75)}),
            await session.call_tool("launch_batch", {"spec": costly(0.75, 0.75), "confirm_cost": True}),
            await session.call_tool("launch_batch", {"spec": costly(0.5, 0.5)}),  # at the threshold: no question
        ]

    refused, confirmed, at_threshold = anyio.run(in_memory, as_token(token_for(member, "launch")), launches, tmp_path)
    assert refused.isError
    said = data(refused)
    assert said["error"] == "the estimated cost $1.50 is above $1.00: call again with confirm_cost=true to launch it"
    assert (said["cost"]["estimate_usd"], said["cost"]["confirm_above_usd"], said["cost"]["needs_confirm"]) == (
        1.5,
        1.0,
        True,
    )
    assert not confirmed.isError and not at_threshold.isError, (confirmed.content, at_threshold.content)
    launched = [data(confirmed)["batch_id"], data(at_threshold)["batch_id"]]
    assert sorted(Batch.objects.values_list("id", flat=True)) == sorted(launched)
    assert Batch.objects.get(id=launched[0]).owner == member
