"""Following a batch without polling: the API's event stream (Server-Sent Events) under daphne, a
real cluster running the batch; `spawn --server` following through it, its token from a config file."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from spawner import remote
from tests.browser.conftest import WebServer
from tests.conftest import ROOT, database_url_for_subprocess

pytestmark = pytest.mark.integration

SPEC = """\
name: streamed
agent: sh
tasks:
  - {key: a, prompt: "sleep 1.5; echo a"}
  - {key: b, prompt: "echo b", depends_on: [a]}
"""


@pytest.fixture
def web(cluster, tmp_path, agent_types):
    """daphne (as `manage.py serve` runs it) on this test's database, with a short keep-alive."""
    yield from serve(cluster, tmp_path)


@pytest.fixture
def web_waiting_long(cluster, tmp_path, agent_types):
    """The same, with a fallback read of the log only every 60 s: what arrives sooner was woken."""
    yield from serve(cluster, tmp_path, SPAWNER_EVENTS_WAIT_SECONDS="60")


def serve(cluster, tmp_path, **extra: str):
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "SPAWNER_WORKDIR": str(workdir),
        "SPAWNER_LOG_DIR": cluster.env["SPAWNER_LOG_DIR"],
        "SPAWNER_WORKSPACE_DIR": cluster.env["SPAWNER_WORKSPACE_DIR"],
        "SPAWNER_EVENTS_KEEPALIVE_SECONDS": "0.4",
        **extra,
    }
    server = WebServer(env, tmp_path / "daphne.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def launch(url: str, token: str, spec: str = SPEC) -> dict:
    answer = httpx.post(
        f"{url}/api/batches",
        content=spec,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/yaml"},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def read_stream(url: str, token: str, batch_id: int, headers=None, **params) -> tuple[list[remote.Event], list[str]]:
    """Every event until the stream ends (bounded by the read timeout), and the raw lines."""
    lines: list[str] = []

    def tap(source):
        for line in source:
            lines.append(line)
            yield line

    with httpx.stream(
        "GET",
        f"{url}/api/batches/{batch_id}/events",
        params=params,
        headers={"Authorization": f"Bearer {token}", **(headers or {})},
        timeout=httpx.Timeout(30, read=20),
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(remote.read_events(tap(response.iter_lines())))
    return events, lines


def test_the_event_stream_follows_a_batch_to_its_end_and_resumes(web, member, token_for):
    token = token_for(member, "read")
    batch = launch(web.url, token_for(member, "launch"))

    events, lines = read_stream(web.url, token, batch["id"])
    assert events[0].name == "snapshot" and json.loads(events[0].data)["id"] == batch["id"]
    assert events[-1].name == "end" and json.loads(events[-1].data) == {"status": "succeeded"}
    logged = [e for e in events[1:-1]]
    ids = [e.id for e in logged]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and ids[0] > events[0].id - 1
    seen = [(json.loads(e.data)["key"], e.name) for e in logged]
    # `a` may already run when the snapshot is taken; everything after it comes as events, in order.
    snapshot_runs = {r["key"]: r["status"] for r in json.loads(events[0].data)["runs"]}
    assert snapshot_runs["b"] == "pending", snapshot_runs
    assert ("a", "run.succeeded") in seen and ("b", "run.running") in seen and ("b", "run.succeeded") in seen, seen
    assert seen.index(("a", "run.succeeded")) < seen.index(("b", "run.running")) < seen.index(("b", "run.succeeded"))
    assert ": keep-alive" in lines  # `a` sleeps 1.5 s; the keep-alive interval is 0.4 s

    # Resume after an event (Last-Event-ID, as a reconnecting client): only the later ones, no snapshot.
    middle = logged[len(logged) // 2]
    resumed, _ = read_stream(web.url, token, batch["id"], headers={"Last-Event-ID": str(middle.id)})
    assert [e.id for e in resumed[:-1]] == [e.id for e in logged if e.id > middle.id]
    assert resumed[-1].name == "end"
    by_query, _ = read_stream(web.url, token, batch["id"], after=middle.id)
    assert [e.id for e in by_query] == [e.id for e in resumed]

    # Refusals are problem details.
    base = f"{web.url}/api/batches/{batch['id']}/events"
    assert httpx.get(base, timeout=10).status_code == 401
    bad = httpx.get(base, headers={"Authorization": f"Bearer {token}", "Last-Event-ID": "soon"}, timeout=10)
    assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["detail"]
    missing = httpx.get(f"{web.url}/api/batches/999999/events", headers={"Authorization": f"Bearer {token}"})
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"


def test_a_waiting_stream_is_woken_by_the_commit_not_its_fallback_read(web_waiting_long, member, token_for):
    """Streams wait for a wake-up from the committing process (the cluster), not for their next read
    of the log: with that read 60 s apart, a batch of two short runs is followed to its end at once."""
    token = token_for(member, "read")
    batch = launch(web_waiting_long.url, token_for(member, "launch"))
    started = time.monotonic()
    events, _ = read_stream(web_waiting_long.url, token, batch["id"])
    took = time.monotonic() - started
    seen = [(json.loads(e.data)["key"], e.name) for e in events[1:-1]]
    assert ("b", "run.succeeded") in seen and events[-1].name == "end", seen
    assert took < 30, f"followed in {took:.1f} s: the stream waited for its fallback read"


def test_remote_follow_reads_the_stream_not_polling(web, member, token_for):
    token = token_for(member, "launch")
    asked: list[str] = []
    server = remote.Remote(web.url, token)
    server.client.event_hooks["request"] = [lambda request: asked.append(request.url.path)]
    try:
        batch = server.launch(SPEC)
        shown: list[tuple] = []
        done = server.follow(batch["id"], on_change=lambda d: shown.append(tuple(r["status"] for r in d["runs"])))
    finally:
        server.close()
    assert done["status"] == "succeeded" and done["succeeded"] == ["a", "b"]
    assert asked.count(f"/api/batches/{batch['id']}/events") == 1
    assert asked.count(f"/api/batches/{batch['id']}") == 1  # the summary at the end, nothing polled
    assert ("running", "pending") in shown and shown[-1] == ("succeeded", "succeeded"), shown


def spawn(*args: str, env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "spawn", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_spawn_on_a_server_with_the_token_in_a_config_file(web, member, token_for, tmp_path):
    spec = tmp_path / "streamed.yaml"
    spec.write_text(SPEC.replace("agent: sh\n", "agent: sh\nbudget_usd: 5\n"))
    config = tmp_path / "config.toml"
    config.write_text(f'[servers."{web.url}/"]\ntoken = "{token_for(member, "launch")}"\n')
    config.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k != "SPAWNER_TOKEN"}
    env.update(SPAWNER_CONFIG=str(config), COLUMNS="160")

    done = spawn(str(spec), "--server", web.url, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "launched batch #" in done.stdout and "streamed" in done.stdout and "parallelism" in done.stdout
    assert "spent $0" in done.stdout and "/ budget $5" in done.stdout, done.stdout  # as a local run shows it

    config.chmod(0o644)
    refused = spawn(str(spec), "--server", web.url, env=env, cwd=tmp_path)
    assert refused.returncode == 1 and f"chmod 600 {config}" in refused.stderr, refused.stderr


def test_events_past_a_hole_in_the_log_wait_for_it_then_go():
    """PostgreSQL hands out ids before commit: an event past an id the log lacks waits for that id
    (its transaction may still commit) until the hole is old enough to be a rolled-back insert."""
    from dashboard.api import stream

    events = [{"id": 11}, {"id": 13}, {"id": 14}]
    since: dict[int, float] = {}
    # 12 is missing: only 11 may go now.
    assert stream.settled(events, {11, 13, 14}, 10, since, now=100.0) == [{"id": 11}]
    # Still missing a moment later: still held back.
    assert stream.settled(events[1:], {13, 14}, 11, since, now=105.0) == []
    # It committed: everything goes.
    assert stream.settled(events[1:], {12, 13, 14}, 11, since, now=106.0) == events[1:]
    # A hole older than GAP_SECONDS was a rolled-back insert: nothing waits for it.
    since.clear()
    assert stream.settled(events[1:], {13, 14}, 11, since, now=200.0) == []
    assert stream.settled(events[1:], {13, 14}, 11, since, now=200.0 + stream.GAP_SECONDS) == events[1:]
    # Unchecked (too wide a range): nothing held back.
    assert stream.settled(events, None, 10, {}, now=1.0) == events


def test_an_event_committed_between_the_two_reads_is_not_skipped():
    """The stream reads its batch's events, then which ids the log holds: an event of the batch that
    committed between the two (seen by the second, not the first) must stop the send before it.
    Found by the kill -9 fault test: one event of 1,241 never reached the watching client."""
    from dashboard.api import stream

    read = [{"id": 11}, {"id": 13}, {"id": 14}]
    present = {11: 7, 12: 7, 13: 7, 14: 7}  # 12 of batch 7 committed after the first read
    assert stream.late_events(read, present, batch_id=7) == 12
    assert stream.late_events(read, {11: 7, 12: 8, 13: 7, 14: 7}, batch_id=7) is None, "another batch's"
    assert stream.late_events(read, {11: 7, 13: 7, 14: 7}, batch_id=7) is None, "a hole: settled() waits for it"
    assert stream.late_events(read, None, batch_id=7) is None


def test_the_remote_progress_shows_spent_and_budget_while_the_batch_runs():
    from rich.console import Console

    from spawner.management.commands.spawn import Command

    command = Command()
    command.console = Console(width=120, record=True, file=io.StringIO())
    cost = {"spent_usd": 0.5, "budget_usd": 2.0, "unknown_runs": 1, "tokens": 10, "over": False, "runs_with_usage": 2}
    run = {"key": "a", "wave": 0, "status": "running", "attempts": 1}
    command.console.print(command._remote_progress({"id": 3, "name": "x", "runs": [run], "cost": cost}))
    shown = command.console.export_text()
    assert "spent $0.5000 / budget $2.00 (1 run with cost unknown) · 10 tokens" in shown, shown
    command.console.print(command._remote_progress({"id": 3, "name": "x", "runs": [run], "cost": {}}))
    assert "spent" not in command.console.export_text()  # a batch without usage or budget: no line


def test_the_bell_rings_only_the_streams_of_batches_that_got_events(monkeypatch):
    """One read per wake-up says which batches got events; only their streams read the log again."""
    import asyncio

    from dashboard.api import stream
    from spawner import selectors

    class Listener:
        def __init__(self):
            self.woken = asyncio.Event()

        async def wait(self, timeout):
            await self.woken.wait()
            self.woken.clear()
            return True

        def close(self):
            pass

    listener = Listener()
    monkeypatch.setattr(selectors, "event_wakeups", lambda: listener)
    monkeypatch.setattr(selectors, "newest_event_id", lambda: 10)
    asked = []
    monkeypatch.setattr(selectors, "batches_with_events_after", lambda after: asked.append(after) or ({2}, 12))

    async def main():
        bell = stream.Bell()
        bell.open(1)
        bell.open(2)
        one, two = bell.ring(1), bell.ring(2)
        await asyncio.sleep(0.1)  # the listener has read where the log ends
        listener.woken.set()
        await bell.wait(two, 5)
        assert two.is_set() and not one.is_set()
        assert bell.ring(2) is not two, "a fresh ring for the next wait"
        listener.woken.set()
        await asyncio.sleep(0.1)
        assert asked == [10, 12], "each read starts after the last one"
        bell.close(1)
        bell.close(2)
        assert bell.task is None

    asyncio.run(main())
