"""Fan-in in a real Chromium: a failed P0 run escalates live, is assigned, retried and resolved;
then the batch's combined result is reviewed and exported."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.browser.conftest import ARTIFACTS, expect_no_reload, sign_in, still_same_document
from tests.conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AGENT = f"cd {ROOT} && python3 examples/agents/review_agent.py"
SPEC = f"""\
name: escalation journey
agent: sh
aggregation: merge
max_parallel: 3
retries: 0
tasks:
  - {{key: deploy-check, priority: P0, prompt: "test -f MARKER && echo 'marker found'"}}
  - {{key: security, prompt: "{AGENT} --focus security spawner"}}
  - {{key: correctness, prompt: "{AGENT} --focus correctness spawner"}}
"""


@pytest.fixture
def bob(transactional_db):
    from django.contrib.auth.models import User

    return User.objects.create_user("bob", password="bob-is-a-teammate")


def test_escalate_assign_retry_resolve_then_review_and_export(web, alice, bob, agent_types, workdir, shots, browser):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    queue = context.new_page()
    errors: list[str] = []
    queue.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(queue, web.url)

    # The queue is empty; it stays open, unreloaded, while a batch is launched in another tab.
    queue.click("header >> text=Escalations")
    expect(queue.get_by_role("heading", name="Escalations")).to_be_visible()
    expect(queue.locator(".empty-queue")).to_be_visible()
    badge = queue.locator("#escalation-badge .count")
    expect(badge).to_have_text("0")
    expect(queue.locator("body[data-live='on']")).to_have_count(1)
    expect_no_reload(queue)

    launcher = context.new_page()
    launcher.goto(web.url + "/batches/new/")
    launcher.click("summary:has-text('Paste or upload')")
    launcher.fill("#id_spec_text", SPEC)
    launcher.locator("#paste button[value='launch']").click()
    expect(launcher).to_have_url(re.compile(r"/batches/\d+/$"))
    batch_url = launcher.url
    batch_id = int(batch_url.rstrip("/").rsplit("/", 1)[1])

    # The P0 run fails: its escalation appears at the top of the queue and the badge counts it, live.
    queue.bring_to_front()
    card = queue.locator("article.escalation").filter(has_text="deploy-check")
    expect(card).to_be_visible(timeout=20_000)
    expect(badge).to_have_text("1")
    expect(queue.locator("#escalation-badge")).to_have_class(re.compile("has-open"))
    expect(card).to_contain_text("P0 run 'deploy-check' ended failed")
    expect(card.locator(".prompt")).to_have_text("test -f MARKER && echo 'marker found'")
    expect(card).to_contain_text("#1 failed, exit 1")
    expect(queue.locator(".empty-queue")).to_be_hidden()
    assert still_same_document(queue)
    shots(queue, "escalation-arrived")

    # Dismissing without a reason is refused next to the form.
    card.locator("button:has-text('Dismiss')").click()
    expect(card.locator(".notice.error")).to_contain_text("Say why you dismiss it")
    shots(queue, "dismiss-refused")

    # Assign it to a teammate; a note typed meanwhile survives the answer and the live redraw.
    note = card.locator("textarea[name='note']")
    note.fill("created the marker file")
    queue.evaluate("""document.addEventListener("htmx:wsAfterMessage", (e) => {
        if (e.detail.message.includes('class="assignee">bob')) { window.__redrawn = true; }
    })""")
    card.locator("select[name='assignee']").select_option(label="bob")
    card.locator("button:has-text('Assign')").click()
    expect(card.locator(".assignee")).to_have_text("bob")
    expect(card.locator("details.record")).to_contain_text("alice assigned it to bob")
    queue.wait_for_function("window.__redrawn === true")  # the relay redrew the card after the answer
    expect(note).to_have_value("created the marker file")

    # Fix the cause, then resolve by retrying: the card says who did it and follows the run to success.
    (workdir / "MARKER").touch()
    card.locator("button:has-text('Retry the run')").click()
    expect(card.locator(".resolution")).to_contain_text("Retried the run by alice")
    expect(card.locator(".run-context .badge")).to_have_text("Succeeded", timeout=20_000)
    expect(card.locator(".log")).to_contain_text("marker found")
    expect(badge).to_have_text("0")
    record = card.locator("details.record")
    expect(record).to_contain_text("Spawner opened it")
    expect(record).to_contain_text("alice assigned it to bob")
    expect(record).to_contain_text("alice resolved it by retrying the run: created the marker file")
    assert still_same_document(queue)
    shots(queue, "escalation-resolved")

    # The batch ends whole; its header links to the combined result and shows the review state.
    queue.goto(batch_url)
    expect(queue.locator("#batch-header .badge.big")).to_have_text("Succeeded", timeout=20_000)
    expect(queue.locator("#batch-header")).to_contain_text("review: pending")
    queue.click("#batch-header a:has-text('Result & review')")
    expect(queue).to_have_url(re.compile(rf"/batches/{batch_id}/result/$"))
    page = queue
    expect(page.locator("#result-header")).to_contain_text("strategy merge")
    expect(page.locator("#agents article.agent")).to_have_count(3)
    rows = page.locator("#findings tr.finding")
    expect(rows.first).to_be_visible()
    total = rows.count()
    shots(page, "result")

    # Sort and filter the findings without a reload.
    expect_no_reload(page)
    page.click("#findings th a:has-text('File')")
    expect(page).to_have_url(re.compile(r"sort=file"))
    expect(page.locator("#findings th a.current")).to_contain_text("File")
    page.select_option("#finding-filters select[name='agent']", "security")
    expect(page.locator("#findings")).to_contain_text("findings match", timeout=5_000)
    for i in range(rows.count()):
        expect(rows.nth(i).locator("td.agents")).to_contain_text("security")
    page.select_option("#finding-filters select[name='agent']", "")
    expect(rows).to_have_count(total)
    assert still_same_document(page)

    # Approve in the review box.
    page.fill("#reviews textarea[name='comment']", "Read the findings; fine to merge.")
    page.click("#reviews button:has-text('Approve')")
    expect(page.locator("#review-record")).to_contain_text("alice approve")
    # alice launched the batch: her approval is recorded, someone else's approves it (REVIEW_OWNER_COUNTS).
    expect(page.locator("#review-record")).to_contain_text("0 of 1 approval needed")
    expect(page.locator("#review-record .badge")).to_have_text("pending")
    expect(page.locator("#result-header .badge.review")).to_have_text("review: pending")
    shots(page, "result-approved")

    # Export the aggregation as Markdown.
    with page.expect_download() as download_info:
        page.click("#result-header a:has-text('Export Markdown')")
    download = download_info.value
    assert download.suggested_filename == f"batch-{batch_id}-result.md"
    markdown = Path(download.path()).read_text()
    assert markdown.startswith(f"# Batch #{batch_id} escalation journey: combined result")
    assert "Strategy: **merge** · status: **complete**" in markdown
    assert "- **deploy-check** (P0, succeeded): marker found" in markdown
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"{download.suggested_filename}").write_text(markdown)

    # Phone width: the queue and the result stay usable.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, storage_state=context.storage_state())
    small = phone.new_page()
    small.goto(web.url + "/escalations/?show=all")
    expect(small.locator("article.escalation").first).to_be_visible()
    shots(small, "phone-escalations")
    small.goto(page.url)
    expect(small.locator("#findings")).to_be_visible()
    shots(small, "phone-result")

    assert errors == []
