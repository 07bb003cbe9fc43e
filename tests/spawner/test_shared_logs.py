"""Logs any web server can read: two clusters and a web server, each with its own SPAWNER_LOG_DIR
(three "machines"), share only the database and a log storage directory. The web server shows the
live output of a running attempt, then the full logs of finished ones, searches and downloads them,
with the clusters' own directories deleted; every stored byte is masked."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.browser.conftest import WebServer
from tests.conftest import CLUSTER_ENV, ClusterProcess, database_url_for_subprocess
from tests.spawner.helpers import launch, wait_batch, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

SECRET = "sh4red-l0g-s3cret-value"
PASSWORD = "a-long-shared-logs-pw"
LINES = 3000  # each finished run's log: more than one page of the viewer (1,000 lines)
SPEC = """
name: shared logs
agent: leaky
retries: 1
tasks:
  - key: live
    prompt: 'echo "token $SHARED_LOGS_SECRET"; for i in $(seq 1 60); do echo "live-$i"; sleep 0.2; done'
""" + "".join(
    f"""  - key: done-{n}
    prompt: 'echo "token $SHARED_LOGS_SECRET"; seq -f "run{n}-line-%g" 1 {LINES}; sleep 1.5'
"""
    for n in range(12)
)


def _client(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30, follow_redirects=False)
    page = client.get("/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    done = client.post("/login/", data={"username": "reader", "password": PASSWORD, "csrfmiddlewaretoken": token})
    assert done.status_code == 302, done.text[:500]
    return client


def _lines(client: httpx.Client, run_id: int, number: int, **params) -> str:
    response = client.get(f"/runs/{run_id}/attempts/{number}/lines/", params=params, headers={"HX-Request": "true"})
    assert response.status_code == 200, response.text[:500]
    return response.text


def test_a_web_server_on_another_machine_shows_live_and_finished_logs(transactional_db, tmp_path):
    from django.contrib.auth.models import User

    from spawner.models import AgentRun, AgentType, LogChunk

    AgentType.objects.create(name="leaky", argv=["sh", "-c", "{prompt}"], secret_names=["SHARED_LOGS_SECRET"])
    User.objects.create_user("reader", password=PASSWORD)
    shared = tmp_path / "shared-logs"
    machines = {name: tmp_path / name for name in ("cluster-1", "cluster-2", "web")}
    base = {
        **os.environ,
        **CLUSTER_ENV,
        "SPAWNER_WORKERS": "3",
        # Two clusters on one busy 2-core machine (SQLite too): a slow heartbeat is no lost worker here.
        "SPAWNER_LEASE_SECONDS": "20",
        "DATABASE_URL": database_url_for_subprocess(),
        "SPAWNER_LOG_STORAGE_DIR": str(shared),
        "SHARED_LOGS_SECRET": SECRET,
    }
    clusters = []
    for name in ("cluster-1", "cluster-2"):
        env = {
            **base,
            "SPAWNER_CLUSTER_NAME": name,
            "SPAWNER_LOG_DIR": str(machines[name] / "logs"),
            "SPAWNER_WORKSPACE_DIR": str(machines[name] / "workspaces"),
        }
        clusters.append(ClusterProcess(env, tmp_path / f"{name}.out"))
    web = None
    try:
        for cluster in clusters:
            cluster.start()
        web_env = {**base, "SPAWNER_LOG_DIR": str(machines["web"] / "logs")}
        web = WebServer(web_env, tmp_path / "web.out")
        web.wait_ready(150)  # a busy 2-core machine: daphne may take a minute to import
        client = _client(web.url)

        batch = launch(SPEC, tmp_path)
        live = AgentRun.objects.get(batch=batch, key="live")

        # Live: the running attempt's output reaches this web server through the database.
        def live_lines():
            live.refresh_from_db()
            if live.status != "running":
                return None
            text = _lines(client, live.id, live.attempt)
            return text if "live-3<" in text else None

        text = wait_for(live_lines, 60, "the live run's output on the web server")
        assert SECRET not in text and "token ***" in text
        rows = list(LogChunk.objects.filter(attempt__run=live).values_list("data", flat=True))
        assert rows, "the live output went through the database"
        assert not any(SECRET.encode() in bytes(row) for row in rows)
        first = re.findall(r"live-(\d+)<", text)
        time.sleep(1.5)
        later = re.findall(r"live-(\d+)<", _lines(client, live.id, live.attempt))
        assert max(map(int, later)) > max(map(int, first)), "the live view grows"

        wait_batch(batch, timeout=120)
        assert set(batch.runs.values_list("status", flat=True)) == {"succeeded"}
        assert not LogChunk.objects.filter(attempt__run__batch=batch).exists(), "rows go once the files are stored"

        # Both clusters ran agents, each into its own directory; the stored copies are masked.
        wrote = {name: list((machines[name] / "logs").rglob("*.log")) for name in ("cluster-1", "cluster-2")}
        assert all(wrote.values()), {k: len(v) for k, v in wrote.items()}
        stored = sorted(p.name for p in (shared / f"batch-{batch.id}").iterdir())
        runs = {run.key: run for run in batch.runs.all()}
        expected = {f"{key}.{run.attempt}.log" for key, run in runs.items()} | {f"live.{runs['live'].attempt}.stderr"}
        assert expected <= set(stored)
        for path in (shared / f"batch-{batch.id}").iterdir():
            assert SECRET.encode() not in path.read_bytes(), path.name
        assert not (machines["web"] / "logs" / f"batch-{batch.id}").exists()

        # The clusters' machines are gone: the web server still shows everything.
        for cluster in clusters:
            cluster.stop()
        for name in ("cluster-1", "cluster-2"):
            shutil.rmtree(machines[name])

        run = runs["done-7"]
        n = run.attempt
        page = client.get(f"/runs/{run.id}/")
        assert page.status_code == 200 and f"run7-line-{LINES}<" in page.text  # the tail of the full log
        assert SECRET not in page.text
        first_page = _lines(client, run.id, n, page=1)
        assert "run7-line-1<" in first_page and "token ***" in first_page and SECRET not in first_page
        found = client.get(
            f"/runs/{run.id}/attempts/{n}/search/", params={"q": "run7-line-2345"}, headers={"HX-Request": "true"}
        )
        assert found.status_code == 200 and "<mark>run7-line-2345</mark>" in found.text, found.text[:2000]
        assert 'href="#L2346"' in found.text  # line 1 is the token line
        whole = client.get(f"/runs/{run.id}/attempts/{n}/log/download/")
        assert whole.status_code == 200
        expected = "token ***\n" + "".join(f"run7-line-{i}\n" for i in range(1, LINES + 1))
        assert whole.text == expected
        earlier = client.get(f"/runs/{run.id}/attempts/{n}/log/", params={"before": 100})
        assert earlier.status_code == 200 and "token ***" in earlier.text

        live_page = _lines(client, live.id, runs["live"].attempt, page=1)
        assert "live-60<" in live_page and SECRET not in live_page
    finally:
        if web is not None:
            web.stop()
        for cluster in clusters:
            cluster.stop()
    assert Path(shared).exists()
