"""The run page on a web server that shares no disk with the cluster (each its own SPAWNER_LOG_DIR,
a shared log storage): in Chromium, the live tail grows over the websocket while the agent runs,
and after the cluster's directory is gone the full log, its search and its line links still work."""

from __future__ import annotations

import concurrent.futures
import os
import shutil

import pytest

from tests.browser.conftest import WebServer, sign_in
from tests.conftest import CLUSTER_ENV, ClusterProcess, database_url_for_subprocess
from tests.spawner.helpers import launch, wait_batch

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

SPEC = """
name: shared log page
agent: sh
tasks:
  - key: slow
    prompt: 'for i in $(seq 1 40); do echo "slow-line-$i"; sleep 0.25; done; seq -f "bulk-%g" 1 2500'
"""


def in_thread(fn):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=150)


def test_the_log_page_reads_the_shared_storage_live_and_after(alice, agent_types, browser, shots, tmp_path):
    from playwright.sync_api import expect

    base = {
        **os.environ,
        **CLUSTER_ENV,
        "DATABASE_URL": database_url_for_subprocess(),
        "SPAWNER_LOG_STORAGE_DIR": str(tmp_path / "shared"),
    }
    machine = tmp_path / "cluster-machine"
    cluster = ClusterProcess(
        {**base, "SPAWNER_LOG_DIR": str(machine / "logs"), "SPAWNER_WORKSPACE_DIR": str(machine / "ws")},
        tmp_path / "cluster.out",
    )
    web = None
    try:
        in_thread(cluster.start)
        web = WebServer({**base, "SPAWNER_LOG_DIR": str(tmp_path / "web-machine" / "logs")}, tmp_path / "web.out")
        web.wait_ready(90)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        sign_in(page, web.url)
        batch = in_thread(lambda: launch(SPEC, tmp_path))
        run = in_thread(lambda: batch.runs.get(key="slow"))

        page.goto(f"{web.url}/runs/{run.id}/")
        tail = page.locator("#run-tail")
        expect(tail.locator("#L3")).to_contain_text("slow-line-3", timeout=60_000)
        # The page stays open: later lines arrive over the websocket (no reload).
        page.evaluate("window.__sameDocument = true")
        expect(tail.locator("#L12")).to_contain_text("slow-line-12", timeout=30_000)
        assert page.evaluate("window.__sameDocument === true")
        shots(page, "live")

        in_thread(lambda: wait_batch(batch, timeout=120))
        in_thread(cluster.stop)
        shutil.rmtree(machine)

        page.goto(f"{web.url}/runs/{run.id}/")
        expect(page.locator("#L2540")).to_contain_text("bulk-2500")
        page.fill(".log-search input[name=q]", "bulk-1234")
        page.click(".log-search button")
        hit = page.locator("#log-results a.hit")
        expect(hit).to_have_count(1)
        hit.click()
        line = page.locator("#L1274")
        expect(line).to_contain_text("bulk-1234")
        expect(line).to_be_in_viewport()
        shots(page, "after")
    finally:
        if web is not None:
            web.stop()
        cluster.stop()
