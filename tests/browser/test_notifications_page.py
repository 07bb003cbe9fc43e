"""In Chromium: a person sets their own notification webhook on the tokens page (a private address
refused, the saved one shown masked), and follows a problem's `type` to the page explaining it."""

from __future__ import annotations

import pytest

from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_set_my_notification_webhook_and_read_a_problem_type(web, alice, browser, shots):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, web.url)
    page.click("header >> text=API tokens")
    section = page.locator("#notifications")
    expect(section.get_by_role("heading", name="Your notifications")).to_be_visible()

    section.locator("#personal-url").fill("http://10.0.0.7/hook")
    section.locator("button:has-text('Save')").click()
    expect(page.locator("#notifications [role=alert]")).to_contain_text("private")
    expect(page.locator("#personal-webhook-now")).to_have_count(0)

    secret_url = "https://hooks.slack.example.org/services/T000/B000/abcdef0123456789abcdef"
    page.locator("#personal-url").fill(secret_url)
    page.select_option("#personal-format", "slack")
    page.locator("#notifications button:has-text('Save')").click()
    expect(page.locator("#personal-webhook-now")).to_contain_text("hooks.slack.example.org/services/T000/B000/***")
    assert "abcdef0123456789abcdef" not in page.content()
    expect(page.locator("#notifications .tag")).to_have_text("slack")
    shots(page, "saved")

    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 1
    shots(page, "phone")

    # A problem's type is a page that explains it.
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(web.url + "/api/problems/spec-invalid")
    expect(page.get_by_role("heading", name="Invalid spec (422)")).to_be_visible()
    page.click("table.problem-types >> text=template-invalid")
    expect(page.get_by_role("heading", name="Invalid template (422)")).to_be_visible()
    shots(page, "problem")
