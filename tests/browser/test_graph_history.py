"""The dependency graph, the timeline's zoom and the history of a batch name, in a real Chromium.

A real cluster runs the tasks; one task fails the first time and works the second, so the
history of the two batches of the same name shows it as flaky.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.browser.conftest import expect_no_reload, sign_in, still_same_document

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = Path("/work/helper/shots")
SPEC = """\
name: graph-journey
agent: sh
max_parallel: 4
tasks:
  - {key: fetch, prompt: "sleep 2; echo fetched"}
  - {key: flaky, prompt: "sleep 1; test -f marker || { touch marker; echo first try fails; exit 3; }"}
  - {key: build, prompt: "sleep 2; echo built", depends_on: [fetch]}
  - {key: lint, prompt: "sleep 1; echo lint ok", depends_on: [fetch]}
  - {key: report, prompt: "echo report", depends_on: [build, lint]}
"""


def node(page, key: str):
    return page.locator("svg.graph-svg g.node", has=page.locator(f"title:text-matches('^{key}:')"))


def launch(page, url: str, shots, shot: str | None = None) -> str:
    from playwright.sync_api import expect

    page.goto(url + "/batches/new/")
    page.click("#paste summary")
    page.fill("textarea[name=spec_text]", SPEC)
    page.click("#paste-form button:has-text('Preview plan')")
    graph = page.locator("#graph-plan")
    expect(graph).to_be_visible()
    expect(graph.locator("g.node")).to_have_count(5)
    expect(node(page, "report")).to_contain_text("planned")
    if shot:
        graph.scroll_into_view_if_needed()
        keep(shots(page, shot), shot)
    page.click("#plan button:has-text('Launch this plan')")
    expect(page).to_have_url(re.compile(r"/batches/\d+/$"))
    return page.url


def keep(path: Path, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SHOTS / f"graph-{name}.png")


def test_graph_live_timeline_zoom_and_history(web, alice, agent_types, workdir, shots, browser):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, web.url)

    first_url = launch(page, web.url, shots, "plan-desktop")
    batch_id = re.search(r"/batches/(\d+)/", first_url).group(1)
    expect_no_reload(page)
    graph = page.locator(f"#graph-{batch_id}")
    expect(graph.locator("g.node")).to_have_count(5)
    expect(graph.locator("svg .heads text")).to_have_text(["wave 1", "wave 2", "wave 3"])

    # The graph follows the runs live: fetch runs, then succeeds; report waits, then runs and succeeds.
    expect(node(page, "fetch")).to_contain_text("running", timeout=15_000)
    expect(node(page, "report")).to_contain_text("pending")
    expect(node(page, "fetch")).to_contain_text("succeeded", timeout=15_000)
    expect(node(page, "flaky")).to_contain_text("failed", timeout=15_000)
    expect(node(page, "flaky").locator(".glyph")).to_have_text("✗")
    expect(node(page, "report")).to_contain_text("succeeded", timeout=20_000)
    expect(page.locator("#batch-header .badge.big")).to_have_text("Partial", timeout=15_000)
    assert still_same_document(page), "the graph changed without a reload"
    # The legend counts states in words, not colour alone.
    expect(graph.locator(".graph-legend")).to_contain_text("succeeded 4")
    expect(graph.locator(".graph-legend")).to_contain_text("failed 1")

    # The timeline: hover details, then zoom with the buttons and the keyboard, and the edges.
    timeline = page.locator(f"#timeline-{batch_id}")
    bar = timeline.locator(".lane:has(a:text-is('flaky')) .bar")
    title = bar.get_attribute("title")
    assert "flaky · attempt 1: failed" in title and "exit code 3" in title and "took" in title, title
    inner = timeline.locator(".tl-inner")
    width = inner.evaluate("e => e.offsetWidth")
    timeline.locator("[data-zoom=in]").click()
    expect(timeline.locator(".tl-zoom")).to_have_text("2×")
    assert inner.evaluate("e => e.offsetWidth") == pytest.approx(2 * width, rel=0.02)
    timeline.locator(".tl-body").focus()
    page.keyboard.press("+")
    expect(timeline.locator(".tl-zoom")).to_have_text("4×")
    ticks = timeline.locator(".axis span").count()
    assert ticks > 6, "a zoomed axis has finer ticks"
    body = timeline.locator(".tl-body")
    assert body.evaluate("e => e.scrollWidth > e.clientWidth"), "a zoomed timeline scrolls sideways in its box"
    page.keyboard.press("ArrowRight")
    timeline.locator("[data-edges]").check()
    expect(timeline.locator("svg.tl-edges path")).to_have_attribute("d", re.compile(r"^M.*C"))
    keep(shots(page, "batch-desktop"), "batch-desktop")
    timeline.locator("[data-zoom=fit]").click()
    expect(timeline.locator(".tl-zoom")).to_have_text("1×")

    # A second batch of the same name: flaky works this time (its marker is there).
    launch(page, web.url, shots)
    expect(page.locator("#batch-header .badge.big")).to_have_text("Succeeded", timeout=30_000)
    second_id = re.search(r"/batches/(\d+)/", page.url).group(1)
    expect(node(page, "flaky")).to_contain_text("succeeded")

    # The history: newest first, flaky marked, its cells differ and lead to the runs.
    page.click("a:has-text('History of “graph-journey”')")
    expect(page.get_by_role("heading", name="History of “graph-journey”")).to_be_visible()
    rows = page.locator("table.history tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator("th.batch")).to_contain_text(f"#{second_id}")
    expect(page.locator("th.task.flaky")).to_have_count(1)
    expect(page.locator("th.task.flaky")).to_contain_text("flaky")
    column = (
        page.locator("table.history thead th")
        .all_inner_texts()
        .index(next(t for t in page.locator("table.history thead th").all_inner_texts() if t.endswith("flaky")))
    )
    newer, older = (rows.nth(i).locator("td, th").nth(column) for i in (0, 1))
    expect(newer).to_contain_text("succeeded")
    expect(older).to_contain_text("failed")
    keep(shots(page, "history-desktop"), "history-desktop")
    older.locator("a").click()
    expect(page.get_by_role("heading", name="flaky")).to_be_visible()

    # A phone: the page never scrolls sideways; the graph and the history scroll in their boxes.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, storage_state=context.storage_state())
    small = phone.new_page()
    small.on("pageerror", lambda exc: errors.append(str(exc)))
    small.goto(first_url)
    expect(small.locator(f"#graph-{batch_id} g.node")).to_have_count(5)
    assert small.evaluate("document.documentElement.scrollWidth") <= 390
    box = small.locator(f"#graph-{batch_id} .graph-scroll")
    # Once laid out (CI once read the box before its width was settled): it scrolls in its own box.
    overflows = "sel => { const e = document.querySelector(sel); return !!e && e.scrollWidth > e.clientWidth; }"
    small.wait_for_function(overflows, arg=f"#graph-{batch_id} .graph-scroll", timeout=10_000)
    assert box.evaluate("e => e.scrollWidth > e.clientWidth"), "the graph scrolls inside its own box"
    keep(shots(small, "batch-phone"), "batch-phone")
    small.goto(web.url + "/batches/history/?name=graph-journey")
    expect(small.locator("table.history tbody tr")).to_have_count(2)
    assert small.evaluate("document.documentElement.scrollWidth") <= 390
    keep(shots(small, "history-phone"), "history-phone")
    small.goto(web.url + "/batches/new/")
    small.click("#paste summary")
    small.fill("textarea[name=spec_text]", SPEC)
    small.click("#paste-form button:has-text('Preview plan')")
    expect(small.locator("#graph-plan g.node")).to_have_count(5)
    assert small.evaluate("document.documentElement.scrollWidth") <= 390
    small.locator("#graph-plan").scroll_into_view_if_needed()
    keep(shots(small, "plan-phone"), "plan-phone")
    phone.close()
    context.close()
    assert not errors, errors
