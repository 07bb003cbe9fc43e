"""The whole journey in a real Chromium, against daphne and a real cluster running real processes."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import expect_no_reload, sign_in, still_same_document

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STREAM = 'for i in $(seq 1 14); do echo "line $i"; sleep 0.5; done'
FLAKY = 'test -f marker || { touch marker; echo "first try fails"; exit 1; }; echo "second try works"'
TASKS = [
    # key, prompt, depends on
    ("fetch", "sleep 1; echo fetched", ""),
    ("stream", STREAM, ""),
    ("flaky", FLAKY, ""),
    ("lint", "sleep 1; printf '\\033[32mlint ok\\033[0m\\n'", ""),
    ("build", "sleep 1; echo built", "fetch"),
    ("report", "echo report", "build, lint"),
]


def test_build_launch_watch_retry_and_compare(web, alice, agent_types, workdir, shots, browser):
    # The browser comes last: Playwright runs an event loop here, after which the ORM refuses to run.
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    sign_in(page, web.url, shots)

    # Build a 6-task batch with dependencies in the form: three blank rows, three added without a reload.
    page.click("text=New batch")
    expect_no_reload(page)
    page.fill("#id_name", "journey")
    page.fill("#id_max_parallel", "6")
    for _ in range(3):
        count = page.locator(".task-row").count()
        page.click("button:has-text('+ Add task')")
        expect(page.locator(".task-row")).to_have_count(count + 1)
        # The new row's first field takes the focus once htmx has settled; typing before that would
        # have the focus move away in the middle of a fill (CI saw row 1's key land in row 6).
        expect(page.locator(".task-row").last.locator("input:not([type=hidden])").first).to_be_focused()
    assert still_same_document(page)
    rows = page.locator(".task-row")
    expect(rows).to_have_count(6)
    for i, (key, prompt, deps) in enumerate(TASKS):
        row = rows.nth(i)
        row.locator("input[name$='-key']").fill(key)
        row.locator("select[name$='-agent']").select_option("sh")
        row.locator("textarea[name$='-prompt']").fill(prompt)
        row.locator("input[name$='-depends_on']").fill(deps)

    # See the plan.
    page.click("button:has-text('Preview plan')")
    plan = page.locator("#plan")
    expect(plan).to_be_visible()
    expect(plan).to_contain_text("Wave 3")
    expect(plan).to_contain_text("fetch → build → report")
    shots(page, "plan")

    # Launch, and watch runs go running, then succeeded, without a reload.
    page.click("#plan button:has-text('Launch this plan')")
    expect(page).to_have_url(re.compile(r"/batches/\d+/$"))
    batch_url = page.url
    expect_no_reload(page)
    grid = page.locator("#run-rows")
    expect(grid.locator(".badge.running").first).to_be_visible(timeout=15_000)
    shots(page, "batch-running")
    expect(page.locator("#run-rows tr:has-text('fetch') .badge")).to_have_text("Succeeded", timeout=15_000)
    expect(page.locator("#run-rows tr:has-text('stream') .badge")).to_have_text("Running")
    assert still_same_document(page)

    # Open a run and see its output stream in.
    page.click("#run-rows a:text-is('stream')")
    expect(page.get_by_role("heading", name="stream")).to_be_visible()
    expect_no_reload(page)
    tail = page.locator("#run-tail")
    expect(tail).to_contain_text("line 3", timeout=10_000)
    seen_early = tail.inner_text()
    expect(tail).to_contain_text("line 14", timeout=15_000)
    assert "line 14" not in seen_early, "the output should have grown while we watched"
    expect(page.locator("#run-header .badge")).to_have_text("Succeeded", timeout=10_000)
    assert still_same_document(page)
    shots(page, "run-streamed")

    # The batch ends partial: one run failed on its first try.
    page.goto(batch_url)
    expect(page.locator("#batch-header .badge.big")).to_have_text("Partial", timeout=20_000)
    expect(page.locator("#run-rows tr:has-text('report') .badge")).to_have_text("Succeeded")
    expect(page.locator("#run-rows tr:has-text('lint') code")).to_have_text("lint ok")  # colour codes gone
    shots(page, "batch-partial")

    # Retry the failed run from its page and see it succeed.
    page.click("#run-rows a:text-is('flaky')")
    expect(page.locator("#run-header .badge")).to_have_text("Failed")
    expect(page.locator("#run-tail")).to_contain_text("first try fails")
    expect_no_reload(page)
    page.click("#run-header button:has-text('Retry')")
    expect(page.locator("#notice")).to_contain_text("Retrying")
    expect(page.locator("#run-header .badge")).to_have_text("Succeeded", timeout=20_000)
    expect(page.locator("#run-tail")).to_contain_text("second try works")
    expect(page.locator("#attempts tbody tr")).to_have_count(2)
    assert still_same_document(page)
    shots(page, "run-retried")

    # The batch is whole again; re-run it sequentially and open the comparison.
    page.goto(batch_url)
    expect(page.locator("#batch-header .badge.big")).to_have_text("Succeeded", timeout=20_000)
    page.click("button:has-text('Re-run sequentially')")
    expect(page).to_have_url(re.compile(r"/batches/\d+/compare/$"), timeout=10_000)
    comparison = page.locator("#comparison")
    expect(comparison).to_contain_text("faster", timeout=60_000)
    expect(comparison.locator(".timeline")).to_have_count(2)
    shots(page, "compare")

    # Phone width: the same pages stay usable.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, storage_state=context.storage_state())
    small = phone.new_page()
    small.goto(batch_url)
    expect(small.locator("#batch-header")).to_be_visible()
    shots(small, "phone-batch")
    small.goto(page.url)
    expect(small.locator("#comparison")).to_contain_text("faster")
    shots(small, "phone-compare")
    small.goto(web.url + "/batches/new/?start=waves")
    shots(small, "phone-new")
    page.goto(web.url + "/")
    shots(page, "batches")

    assert errors == []


def test_mistakes_are_shown_next_to_the_fields_they_concern(web, alice, agent_types, shots, browser):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, web.url)
    page.goto(web.url + "/batches/new/")
    rows = page.locator(".task-row")
    expect(rows).to_have_count(3)
    rows.nth(2).locator("button:has-text('Remove')").click()
    expect(rows).to_have_count(2)
    page.fill("#id_name", "mistakes")
    for i, (key, deps) in enumerate([("a", "b"), ("b", "a")]):
        rows.nth(i).locator("input[name$='-key']").fill(key)
        rows.nth(i).locator("select[name$='-agent']").select_option("sh")
        rows.nth(i).locator("textarea[name$='-prompt']").fill("true")
        rows.nth(i).locator("input[name$='-depends_on']").fill(deps)
    page.click("button:has-text('Preview plan')")
    expect(page.locator("#plan")).to_have_count(0)
    expect(page.locator(".task-row .field.depends ul.errorlist").first).to_contain_text("dependency cycle")
    shots(page, "cycle")

    page.click("summary:has-text('Paste or upload')")
    page.fill("#id_spec_text", "name: pasted\ntasks:\n  - {key: a, agent: sh, prompt: x, depends_on: [zzz]}\n")
    page.locator("#paste button[value='plan']").click()
    expect(page.locator("#spec-errors")).to_contain_text("unknown dependency 'zzz'")
    expect(page.locator("#id_spec_text")).to_have_value(re.compile("name: pasted"))
    shots(page, "pasted-spec-error")
