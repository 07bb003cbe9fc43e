"""The clusters page and GET /api/clusters (admins only), and its drain button against a real
cluster: the cluster finishes the agent it runs, starts nothing new, and exits."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from spawner import services
from spawner.engine import registry
from spawner.models import AgentRun, RunAttempt, WorkerHeartbeat
from tests.conftest import CLUSTER_ENV, ClusterProcess, database_url_for_subprocess
from tests.spawner.helpers import launch, wait_for, wait_run


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def registered(db):
    registry.join(name="east", host="machine-a", pid=101, workers=8)
    registry.join(name="west", host="machine-b", pid=202, workers=4)
    WorkerHeartbeat.objects.filter(name="west").update(busy=3)
    registry.join(name="gone", host="machine-c", pid=303, workers=2)
    WorkerHeartbeat.objects.update(state="running")  # each has beaten since it joined
    WorkerHeartbeat.objects.filter(name="gone").update(seen_at=timezone.now() - timedelta(minutes=10))


def test_an_admin_sees_every_cluster_with_a_drain_button_for_the_live_ones(admin, registered):
    page = signed_in(admin).get("/clusters/").content.decode()
    assert 'href="/clusters/">Clusters</a>' in page  # the nav link
    for name, host, load in (
        ("east", "machine-a", "0 / 8"),
        ("west", "machine-b", "3 / 4"),
        ("gone", "machine-c", "0 / 2"),
    ):
        row = page.split(f'data-name="{name}"', 1)[1].split("</tr>", 1)[0]
        assert host in row and load in row and registry.version() in row and " s ago" in row
        assert ('name="name" value="' + name + '"' in row) == (name != "gone")
    assert 'class="badge silent">silent' in page and 'class="badge running">running' in page


def test_anyone_else_gets_403_and_no_link(viewer, member, registered):
    for user in (viewer, member):  # a member's permissions do not make an admin
        client = signed_in(user)
        response = client.get("/clusters/")
        assert response.status_code == 403
        assert "Only an admin may see the clusters" in response.content.decode()
        assert client.post("/clusters/drain/", {"name": "east"}).status_code == 403
        assert 'href="/clusters/"' not in client.get("/").content.decode()
    assert not WorkerHeartbeat.objects.filter(drain_requested_at__isnull=False).exists()
    assert Client().get("/clusters/").status_code == 302  # strangers sign in first


def test_the_drain_button_needs_csrf(admin, registered):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    assert client.post("/clusters/drain/", {"name": "east"}).status_code == 403
    assert not WorkerHeartbeat.objects.filter(drain_requested_at__isnull=False).exists()


def test_draining_an_unknown_cluster_says_which_are_live(admin, registered):
    response = signed_in(admin).post("/clusters/drain/", {"name": "north"}, follow=True)
    assert "no live cluster is named &#x27;north&#x27; (live clusters: east, west)" in response.content.decode()


def test_the_api_lists_clusters_for_an_admin_token_only(admin, viewer, registered):
    from tests.api.conftest import Api

    def token(user, scope):
        return services.token_create(user=user, name=scope, scope=scope)[1]

    response = Api(token(admin, "admin")).get("/clusters")
    assert response.status_code == 200
    rows = {c["name"]: c for c in json.loads(response.content)}
    assert set(rows) == {"east", "west", "gone"}
    assert rows["west"]["busy"] == 3 and rows["west"]["workers"] == 4 and rows["west"]["host"] == "machine-b"
    assert rows["gone"]["state"] == "silent" and rows["east"]["state"] == "running"
    assert rows["gone"]["heartbeat_age_seconds"] >= 600 and rows["east"]["version"] == registry.version()
    for user, scope in ((admin, "read"), (admin, "launch"), (viewer, "read")):
        response = Api(token(user, scope)).get("/clusters")
        assert response.status_code == 403 and response["Content-Type"] == "application/problem+json", scope
    assert Api().get("/clusters").status_code == 401
    session = signed_in(admin).get("/api/clusters")
    assert session.status_code == 200 and len(json.loads(session.content)) == 3


@pytest.fixture
def cluster(transactional_db, tmp_path, settings):
    """A real cluster, as tests/conftest.py starts one, whose drain lets an agent finish however loaded
    the machine is (the suite's 5 s would hand a slow one back)."""
    log_dir = tmp_path / "logs"
    settings.SPAWNER = {**settings.SPAWNER, "LOG_DIR": log_dir, "WORKSPACE_DIR": tmp_path / "workspaces"}
    env = {
        **os.environ,
        **CLUSTER_ENV,
        "SPAWNER_DRAIN_SECONDS": "90",
        "DATABASE_URL": database_url_for_subprocess(),
        "SPAWNER_LOG_DIR": str(log_dir),
        "SPAWNER_WORKSPACE_DIR": str(tmp_path / "workspaces"),
    }
    c = ClusterProcess(env, tmp_path / "cluster.log")
    c.start()
    yield c
    c.stop()


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_the_drain_button_drains_a_real_cluster(cluster, admin, agent_types, tmp_path):
    tasks = "  - {key: a, prompt: 'sleep 6'}\n  - {key: b, prompt: 'true'}\n"
    spec = "name: drained\nagent: sh\nmax_parallel: 1\ntasks:\n" + tasks
    batch = launch(spec, tmp_path)
    wait_run(batch, "a", "running", timeout=60)
    (row,) = WorkerHeartbeat.objects.filter(pid=cluster.proc.pid)
    assert row.busy in (0, 1)

    client = signed_in(admin)
    page = client.post("/clusters/drain/", {"name": row.name}, follow=True).content.decode()
    assert f"Cluster {row.name} drains at its next reaper step" in page
    wait_for(lambda: WorkerHeartbeat.objects.filter(pid=cluster.proc.pid, state="draining").exists(), 20, "draining")
    assert 'class="badge draining">draining' in client.get("/clusters/").content.decode()
    assert RunAttempt.objects.get(run__batch=batch, run__key="a").status == "running", "drained while it ran"

    assert cluster.proc.wait(timeout=90) == 0, "the cluster exits once its agent is done"
    attempt = RunAttempt.objects.get(run__batch=batch, run__key="a")
    assert attempt.status == "succeeded" and attempt.cluster == row.name, "it finished, not handed back"
    later = AgentRun.objects.get(batch=batch, key="b")
    assert later.status in ("pending", "queued") and not later.attempts.filter(started_at__isnull=False).exists()
    assert not WorkerHeartbeat.objects.filter(pid=cluster.proc.pid).exists(), "it left the registry"
    log = cluster.log_path.read_text()
    assert "draining (an admin asked it to drain)" in log and "0 handed back" in log
    run_page = client.get(f"/runs/{attempt.run_id}/").content.decode()
    assert f'<td class="small cluster">{row.name}</td>' in run_page


def test_the_command_line_drains_a_cluster_by_name(registered, capsys):
    from django.core.management import CommandError, call_command

    call_command("spawner_cluster", "--drain", "west")
    assert "cluster west (machine-b, pid 202) will drain at its next reaper step" in capsys.readouterr().out
    assert WorkerHeartbeat.objects.get(name="west").drain_requested_by == "command line"
    with pytest.raises(CommandError, match="no live cluster is named 'gone'"):
        call_command("spawner_cluster", "--drain", "gone")


def test_the_run_page_and_the_api_show_each_attempts_cluster(member, make_batch):
    batch = make_batch()
    run = batch.runs.get(key="build")
    RunAttempt.objects.filter(run=run).update(cluster="east")
    page = signed_in(member).get(f"/runs/{run.id}/").content.decode()
    assert '<td class="small cluster">east</td>' in page
    from tests.api.conftest import Api

    api = Api(services.token_create(user=member, name="r", scope="read")[1])
    (attempt,) = json.loads(api.get(f"/runs/{run.id}/attempts").content)
    assert attempt["cluster"] == "east"
