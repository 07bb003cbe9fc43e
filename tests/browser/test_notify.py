"""The owner of a batch turns on desktop notifications and gets one when an escalation opens and
one when the batch ends (Chromium with the notifications permission granted)."""

from __future__ import annotations

import pytest

from tests.browser.conftest import sign_in
from tests.browser.test_log_viewer import in_thread
from tests.spawner.helpers import launch, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SPEC = """name: notify me
agent: sh
retries: 0
tasks:
  - {key: breaks, prompt: 'sleep 2; exit 3', priority: P0}
  - {key: slow, agent: sleep, prompt: '6'}
"""


def test_the_owner_is_notified_of_an_escalation_then_of_the_end(web, agent_types, alice, browser, shots, tmp_path):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["notifications"], origin=web.url)
    context.add_init_script(
        "window.__notified = [];"
        "document.addEventListener('spawner:notified',"
        " e => window.__notified.push(e.detail.title + ' | ' + e.detail.body));"
    )
    page = context.new_page()
    sign_in(page, web.url)
    batch = in_thread(lambda: launch(SPEC, tmp_path, owner=alice))
    page.goto(f"{web.url}/batches/{batch.id}/")
    toggle = page.locator("#notify-toggle")
    expect(toggle).to_have_text("Notify me")
    toggle.click()
    expect(toggle).to_have_text("Stop notifying me")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    shots(page, "on")

    page.wait_for_function("window.__notified.some(t => t.includes('needs a person'))", timeout=30_000)
    shots(page, "escalated")
    page.screenshot(path="/work/helper/shots/hooks-notify-on.png", full_page=True)
    page.wait_for_function("window.__notified.some(t => t.includes('ended'))", timeout=40_000)
    notified = page.evaluate("window.__notified")
    assert notified[0] == f"Batch #{batch.id} needs a person | notify me: 1 open escalation."
    assert notified[-1] == f"Batch #{batch.id} partial | notify me ended: partial."
    assert len(notified) == 2, notified

    # The choice is remembered for this batch after a reload; turned off, it stays off.
    page.reload()
    expect(toggle).to_have_text("Stop notifying me")
    toggle.click()
    expect(toggle).to_have_text("Notify me")
    shots(page, "off")


def test_someone_else_sees_no_notify_toggle_on_a_batch_they_do_not_own(web, agent_types, alice, browser, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page()
    sign_in(page, web.url)
    batch = in_thread(lambda: launch("name: theirs\nagent: sh\ntasks:\n  - {key: a, prompt: 'true'}\n", tmp_path))
    page.goto(f"{web.url}/batches/{batch.id}/")
    expect(page.get_by_role("heading", name=f"#{batch.id} theirs")).to_be_visible()
    expect(page.locator("#notify-toggle")).to_have_count(0)


def test_an_admin_reads_the_delivery_log_and_redelivers_a_refused_call(web, agent_types, alice, browser, tmp_path):
    from django.utils import timezone
    from playwright.sync_api import expect

    from spawner.models import WebhookDelivery

    def setup():
        alice.is_staff = True
        alice.save()
        batch = launch("name: hooked\nagent: sh\ntasks:\n  - {key: a, prompt: 'true'}\n", tmp_path, owner=alice)
        # A call to a closed port (the test cluster allows 127.0.0.1; the spec refuses a literal one).
        url = "http://127.0.0.1:9/hook/abcdef0123456789abcdef"
        WebhookDelivery.objects.create(
            batch=batch, event="batch.ended", url=url, payload={"event": "batch.ended"}, next_attempt_at=timezone.now()
        )
        return batch

    batch = in_thread(setup)
    # The cluster refuses a loopback address it was not told to allow: failed, with the reason.
    row = in_thread(lambda: wait_for(lambda: WebhookDelivery.objects.filter(batch=batch, state="failed").first(), 40))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, web.url)
    page.click("header >> text=Webhooks")
    expect(page.get_by_role("heading", name="Webhook deliveries")).to_be_visible()
    line = page.locator(f"#delivery-{row.id}")
    expect(line).to_contain_text("batch.ended")
    expect(line).to_contain_text("http://127.0.0.1:9/hook/***")
    expect(line).to_contain_text("Connection refused")
    page.screenshot(path="/work/helper/shots/hooks-delivery-log.png", full_page=True)
    before = in_thread(lambda: WebhookDelivery.objects.get(id=row.id).updated_at)
    line.locator("button:has-text('Redeliver')").click()
    expect(page.locator(".notice.ok")).to_contain_text(f"Webhook call #{row.id} is queued again")
    page.screenshot(path="/work/helper/shots/hooks-redelivered.png", full_page=True)
    # Sent again by the cluster, from a fresh count of tries, and failed again for the same reason.
    done = WebhookDelivery.objects.filter(id=row.id, state="failed", updated_at__gt=before)
    again = in_thread(lambda: wait_for(lambda: done.first(), 40))
    assert "Connection refused" in again.last_error and again.attempts >= 1
