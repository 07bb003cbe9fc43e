"""A whole batch driven through the REST API only, against a real cluster; and `spawn --server`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from spawner import services
from spawner.models import Batch
from tests.api.conftest import Api
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

RESULT = {"summary": "fine", "verdict": "pass", "findings": [{"severity": "low", "title": "nit", "file": "a.py"}]}
REVIEW = json.dumps(f"echo '{json.dumps(RESULT)}' > $SPAWNER_RESULT_FILE")
SPEC = f"""\
name: contract
agent: sh
aggregation: merge
tasks:
  - key: review
    prompt: {REVIEW}
  - {{key: flaky, prompt: "test -f marker && echo fixed", priority: P0}}
  - {{key: broken, prompt: "echo broken; exit 3", priority: P0}}
"""


def follow(api: Api, batch_id: int, timeout: float = 90) -> dict:
    """Poll the batch until it ends, as a client would (gently)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        detail = api.get(f"/batches/{batch_id}").json()
        if detail["status"] != "running":
            return detail
        time.sleep(0.3)
    raise AssertionError(f"batch #{batch_id} still running after {timeout} s")


@pytest.fixture
def workdir(settings, tmp_path, agent_types):
    settings.SPAWNER_WORKDIR = tmp_path
    return tmp_path


def test_a_whole_batch_through_the_api(cluster, workdir, member, token_for):
    api = Api(token_for(member, "launch"))
    launched = api.post("/batches", SPEC, content_type="application/yaml", headers={"Idempotency-Key": "contract-1"})
    assert launched.status_code == 201, launched.content
    batch_id = launched.json()["id"]
    # The answer to a launch was lost: the client sends it again, and gets the same batch.
    again = api.post("/batches", SPEC, content_type="application/yaml", headers={"Idempotency-Key": "contract-1"})
    assert (again.status_code, again.json()["id"]) == (200, batch_id)

    ended = follow(api, batch_id)
    assert ended["status"] == "partial" and sorted(ended["failed"]) == ["broken", "flaky"]
    runs = {r["key"]: r for r in ended["runs"]}
    output = api.get(f"/runs/{runs['broken']['id']}/output")
    assert output.status_code == 200 and b"broken" in output.content
    escalations = api.get("/escalations", batch=batch_id, state="open").json()
    assert {e["run_key"] for e in escalations["items"]} == {"broken", "flaky"}

    # Fix what made `flaky` fail, retry it: the batch reopens and ends again.
    (workdir / "marker").write_text("")
    assert api.post(f"/runs/{runs['flaky']['id']}/retry").status_code == 200
    time.sleep(0.2)
    ended = follow(api, batch_id)
    assert {r["key"]: r["status"] for r in ended["runs"]}["flaky"] == "succeeded"
    attempts = api.get(f"/runs/{runs['flaky']['id']}/attempts").json()
    assert [a["status"] for a in attempts] == ["failed", "succeeded"]

    aggregation = api.get(f"/batches/{batch_id}/aggregation").json()
    assert aggregation["strategy"] == "merge" and "review" in aggregation["used"]
    assert api.get(f"/batches/{batch_id}/findings").json()["total"] == 1

    # `broken` stays broken: a person accepts the partial result.
    still_open = [e for e in api.get("/escalations", batch=batch_id, state="open").json()["items"]]
    assert [e["run_key"] for e in still_open] == ["broken"]
    resolved = api.post(f"/escalations/{still_open[0]['id']}/resolve", {"action": "accept", "note": "known"})
    assert resolved.status_code == 200 and resolved.json()["state"] == "resolved"
    assert api.get("/escalations", batch=batch_id, state="open").json()["count"] == 0


def run_spawn(*args: str, token: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPAWNER_TOKEN": token, "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "spawn", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_spawn_on_a_server(cluster, live_server, workdir, member, token_for):
    token = token_for(member, "launch")
    good = workdir / "good.yaml"
    good.write_text("name: remote\nagent: sh\ntasks:\n  - {key: a, prompt: echo one}\n  - {key: b, prompt: echo two}\n")
    planned = run_spawn(str(good), "--server", live_server.url, "--plan", token=token, cwd=workdir)
    assert planned.returncode == 0 and "wave 1: a, b" in planned.stdout, planned.stderr
    assert not Batch.objects.exists()
    done = run_spawn(str(good), "--server", live_server.url, token=token, cwd=workdir)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "batch #" in done.stdout and "succeeded" in done.stdout and "parallelism" in done.stdout

    failing = workdir / "failing.yaml"
    failing.write_text("name: remote-fail\nagent: sh\ntasks:\n  - {key: a, prompt: 'exit 4'}\n")
    done = run_spawn(str(failing), "--server", live_server.url, "--json", token=token, cwd=workdir)
    assert done.returncode == 1 and "ended failed" in done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "failed" and summary["runs"][0]["exit_code"] == 4

    bad = workdir / "bad.yaml"
    bad.write_text("name: bad\nagent: sh\ntasks:\n  - {key: a, agent: nope}\n")
    done = run_spawn(str(bad), "--server", live_server.url, token=token, cwd=workdir)
    assert done.returncode == 1 and "line 4" in done.stdout + done.stderr and "nothing was launched" in done.stderr

    done = run_spawn(str(good), "--server", live_server.url, token="spn_wrong", cwd=workdir)
    assert done.returncode == 1 and "401" not in done.stderr[:0] and "token" in done.stderr
    read_only = services.token_create(user=member, name="ro", scope="read")[1]
    done = run_spawn(str(good), "--server", live_server.url, token=read_only, cwd=workdir)
    assert done.returncode == 1 and "scope is read" in done.stderr

    # A template saved on the server, launched by name with variables, followed, summed up.
    services.template_save(
        actor=member,
        name="greet",
        spec_text="name: greet ${who}\nagent: sh\ntasks:\n  - {key: a, prompt: 'echo hello ${who}'}\n",
        variables_text="who",
    )
    args = ("--server", live_server.url, "--template", "greet", "--var", "who=remote world", "--json")
    done = run_spawn(*args, token=token, cwd=workdir)
    assert done.returncode == 0, done.stderr + done.stdout
    summary = json.loads(done.stdout)
    assert summary["name"] == "greet remote world" and summary["status"] == "succeeded"
    assert Batch.objects.get(id=summary["batch"]).template.name == "greet"
    done = run_spawn("--server", live_server.url, "--template", "nope", token=token, cwd=workdir)
    assert done.returncode == 1 and "no template named 'nope'" in done.stderr
    done = run_spawn("--server", live_server.url, "--template", "greet", token=token, cwd=workdir)
    assert done.returncode == 1 and "who" in done.stderr and "nothing was launched" in done.stderr
