"""A person makes an API token in Chromium, uses it from a script, tries the docs page, revokes it."""

from __future__ import annotations

import httpx
import pytest

from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_make_use_and_revoke_a_token(web, agent_types, alice, browser, shots):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(web.url) else None)
    sign_in(page, web.url)
    page.click("header >> text=API tokens")
    expect(page.get_by_role("heading", name="API tokens")).to_be_visible()
    page.fill("#id_name", "CI on main")
    page.select_option("#id_scope", "launch")
    expect(page.locator("#id_scope option[value=admin]")).to_have_count(0)  # alice is not an admin
    page.click("button:has-text('Make token')")
    secret = page.input_value("#token-secret")
    assert secret.startswith("spn_")
    shots(page, "made")

    # A script uses it.
    headers = {"Authorization": f"Bearer {secret}"}
    spec = "name: from a script\nagent: sh\ntasks:\n  - {key: a, prompt: echo hi}\n"
    launched = httpx.post(
        f"{web.url}/api/batches", content=spec, headers={**headers, "Content-Type": "application/yaml"}, timeout=30
    )
    assert launched.status_code == 201, launched.text
    assert httpx.get(f"{web.url}/api/batches", headers=headers, timeout=30).json()["count"] == 1

    # The docs page works from the app's own files, and "Try it out" uses the session.
    page.goto(web.url + "/api/docs")
    page.locator(".opblock-summary-path", has_text="/api/batches").first.click()
    page.click("text=Try it out")
    page.click("text=Execute")
    expect(page.locator(".live-responses-table tbody .response-col_status").first).to_have_text("200")
    shots(page, "docs")
    # A POST from the docs page carries the session's CSRF token: a plan, which launches nothing.
    page.locator(".opblock-summary-path", has_text="/api/batches/plan").first.click()
    plan = page.locator(".opblock", has_text="/api/batches/plan").first
    plan.locator("text=Try it out").click()
    plan.locator("textarea.body-param__text").fill('{"name": "p", "agent": "sh", "tasks": [{"key": "a"}]}')
    plan.locator("text=Execute").click()
    expect(plan.locator(".live-responses-table tbody .response-col_status").first).to_have_text("200")
    assert outside == [], f"the docs page loaded from outside the app: {outside[:3]}"

    # The list shows it once used, never its secret; revoked, it no longer opens the API.
    page.goto(web.url + "/tokens/")
    row = page.locator("table.tokens tr", has_text="CI on main")
    expect(row).to_contain_text(secret[:12])
    assert secret not in page.content()
    row.locator("button:has-text('Revoke')").click()
    expect(page.locator("table.tokens tr", has_text="CI on main")).to_contain_text("revoked")
    shots(page, "revoked")
    assert httpx.get(f"{web.url}/api/batches", headers=headers, timeout=30).status_code == 401

    # On a phone the page does not scroll sideways (the table scrolls in its own box).
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 1
    shots(page, "phone")
