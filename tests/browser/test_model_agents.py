"""A model agent's answer streams into the live run page; a rate-limited run shows it is waiting."""

from __future__ import annotations

import concurrent.futures

import pytest

from spawner.models import AgentRun, AgentType
from spawner.states import AgentKind
from tests.browser.conftest import expect_no_reload, sign_in, still_same_document
from tests.spawner.helpers import launch
from tests.support.model_server import ModelServer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]
SPEC = "name: models\nagent: reviewer\ntasks:\n  - {key: s, prompt: stream}\n  - {key: l, prompt: limited}\n"


def in_thread(fn):
    """Run Django ORM code off Playwright's event loop (the ORM is synchronous)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=30)


@pytest.fixture
def launcher(web, alice, workdir):
    """launch() -> (batch, run s), callable once the page is open."""
    with ModelServer() as server:
        AgentType.objects.create(
            name="reviewer", kind=AgentKind.MODEL, base_url=server.url + "/v1", model="scripted-7b"
        )
        server.chat(" ".join(f"w{i}" for i in range(60)), when="stream")
        server.chat("after the wait", when="limited")
        server.chat(status=429, retry_after="6", when="limited", times=1)
        server.token_delay = 0.1

        def start():
            from django.db import connection

            try:
                batch = launch(SPEC, workdir, owner=alice)
                return batch, AgentRun.objects.get(batch=batch, key="s")
            finally:
                connection.close()

        yield lambda: in_thread(start)


def test_a_model_answer_streams_into_the_run_page_and_a_rate_limit_shows_waiting(web, launcher, shots, browser):
    from playwright.sync_api import expect

    page = browser.new_page()
    sign_in(page, web.url)
    batch, run = launcher()

    page.goto(f"{web.url}/batches/{batch.id}/")
    expect_no_reload(page)
    expect(page.locator("#run-rows")).to_contain_text("waiting: rate limited", timeout=15_000)
    shots(page, "rate-limited")
    assert still_same_document(page)

    page.goto(f"{web.url}/runs/{run.id}/")
    expect_no_reload(page)
    tail = page.locator("#run-tail")
    expect(tail).to_contain_text("w3", timeout=15_000)
    seen_early = tail.inner_text()
    expect(tail).to_contain_text("w59", timeout=15_000)
    assert "w59" not in seen_early, "the answer should have grown while we watched"
    expect(page.locator("#run-header .badge")).to_have_text("Succeeded", timeout=10_000)
    assert still_same_document(page)
    shots(page, "model-streamed")

    page.goto(f"{web.url}/batches/{batch.id}/")
    expect(page.locator("#batch-header .badge.big")).to_have_text("Succeeded", timeout=20_000)
