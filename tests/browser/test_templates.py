"""A person saves a template in Chromium, launches it with its variables, sees its launches over
time, and schedules it."""

from __future__ import annotations

import shutil

import pytest

from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SPEC = """name: check ${branch}
agent: sh
tasks:
  - key: a
    prompt: "echo branch ${branch}"
  - key: b
    prompt: "echo {{ deps.a.summary }} done"
    depends_on: [a]
"""


def keep(path, name: str) -> None:
    shutil.copy(path, f"/work/helper/shots/sched-{name}.png")


def test_save_launch_and_schedule_a_template(web, agent_types, alice, browser, shots):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, web.url)
    page.click("header >> text=Templates")
    expect(page.get_by_role("heading", name="Templates")).to_be_visible()
    page.fill("#t-name", "branch-check")
    page.fill("#t-description", "Lint and test one branch")
    page.fill("#t-spec", SPEC)
    page.fill("#t-vars", "branch=main")
    keep(shots(page, "new"), "new")
    page.click("button:has-text('Save template')")
    expect(page.get_by_role("heading", name="branch-check")).to_be_visible()

    for branch in ("feature/login", "main"):
        page.fill("#var-branch", branch)
        page.click("#launch button:has-text('Launch')")
        expect(page.locator("h1")).to_contain_text(f"check {branch}")
        expect(page.locator(".badge.batch-state.big").first).to_have_text("Succeeded", timeout=30_000)
        if branch == "main":
            keep(shots(page, "batch"), "batch")
            page.click("a:has-text('From template')")
        else:
            page.goto(page.url.split("/batches/")[0] + "/templates/")
            page.click("a:has-text('branch-check')")
    expect(page.locator("table.template-history tbody tr")).to_have_count(2)
    expect(page.locator(".pipeline-strip .cell.succeeded")).to_have_count(2)

    page.fill("#s-cron", "0 3 * * 1-5")
    page.fill("#s-tz", "Europe/Paris")
    page.fill("#s-var-branch", "nightly")
    page.click("button:has-text('Add schedule')")
    expect(page.locator("table.schedules tbody tr")).to_contain_text("0 3 * * 1-5")
    keep(shots(page, "template"), "template")
    page.click("table.schedules button:has-text('Pause')")
    expect(page.locator("table.schedules tbody tr")).to_contain_text("paused")
    keep(shots(page, "paused"), "paused")
