"""Every page at a phone's width (390 px) and a desktop's (1280 px) in a real Chromium: nothing
scrolls the page sideways.

Wide content (tables, timelines, graphs, logs) scrolls inside its own box; long paths and
unbroken output wrap. The batch has what makes pages wide: a failed P0 run with an open
escalation, findings with long paths, a long unbroken output line, and a sequential re-run.
"""

from __future__ import annotations

import pytest

from tests.browser.conftest import ARTIFACTS, PASSWORD
from tests.conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AGENT = f"cd {ROOT} && python3 examples/agents/review_agent.py"
LONG = "x" * 400
KEY = "k" + "y" * 99  # the longest key a task may have, with nowhere to break
SPEC = f"""\
name: phone width
agent: sh
aggregation: merge
max_parallel: 4
retries: 0
tasks:
  - {{key: deploy-check, priority: P0, prompt: "echo {LONG}; exit 1"}}
  - {{key: {KEY}, prompt: "{AGENT} --focus security spawner"}}
  - {{key: correctness, prompt: "{AGENT} --focus correctness spawner"}}
  - {{key: report, depends_on: [{KEY}, correctness], prompt: "echo /a/very/long/path/{LONG}"}}
  - {{key: after, depends_on: [{KEY}, deploy-check], prompt: "echo after"}}
"""

# The page's own width against the viewport's; 1 px of rounding allowed.
WIDER_THAN_VIEWPORT = "document.documentElement.scrollWidth - window.innerWidth"


def _pages(batch_id: int, run_ids: list[int]) -> list[tuple[str, str]]:
    pages = [
        ("batch-list", "/"),
        ("new-batch", "/batches/new/"),
        ("batch", f"/batches/{batch_id}/"),
        ("result", f"/batches/{batch_id}/result/"),
        ("compare", f"/batches/{batch_id}/compare/"),
        ("escalations", "/escalations/"),
        ("stats", "/stats/"),
        ("history", "/batches/history/?name=phone+width"),
        ("tokens", "/tokens/"),
    ]
    pages += [(f"run-{n}", f"/runs/{run_id}/") for n, run_id in enumerate(run_ids)]
    return pages


@pytest.fixture
def pages(web, alice, agent_types, workdir):
    """The batch, its re-run, and every page to visit (made before the browser starts: after it
    the ORM refuses to run in this thread)."""
    from spawner import services
    from spawner.models import AgentRun
    from tests.spawner.helpers import launch, wait_batch

    batch = wait_batch(launch(SPEC, workdir, owner=alice), timeout=90)
    rerun = wait_batch(services.batch_rerun_sequential(batch=batch, actor=alice), timeout=120)
    run_ids = list(AgentRun.objects.filter(batch=batch).order_by("order").values_list("id", flat=True))
    return _pages(batch.id, run_ids) + [("rerun", f"/batches/{rerun.id}/")]


@pytest.mark.parametrize("width", [390, 1280])
def test_no_page_scrolls_sideways(web, pages, browser, width):

    phone = width < 600
    context = browser.new_context(viewport={"width": width, "height": 844}, is_mobile=phone, has_touch=phone)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(web.url + "/login/")
    assert page.evaluate(WIDER_THAN_VIEWPORT) <= 1, "the sign-in page scrolls sideways"
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(web.url + "/")

    ARTIFACTS.mkdir(exist_ok=True)
    too_wide = {}
    for name, path in pages:
        response = page.goto(web.url + path)
        assert response.status == 200, f"{path} answered {response.status}"
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(ARTIFACTS / f"width-{width}-{name}.png"), full_page=True)
        if (excess := page.evaluate(WIDER_THAN_VIEWPORT)) > 1:
            widest = page.evaluate(
                """() => [...document.querySelectorAll('body *')]
                    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
                    .filter(e => !e.closest('.table-wrap, .scroll-x, pre, .timeline, .graph-box'))
                    .slice(0, 3).map(e => e.tagName + '.' + [...e.classList].join('.'))"""
            )
            too_wide[path] = (excess, widest)
    assert not too_wide, f"pages wider than {width} px (px too wide, widest elements): {too_wide}"
    assert not errors, errors
