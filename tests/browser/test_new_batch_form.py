"""The new-batch form in a real Chromium: every error at once, listed at the top with links that
take the focus to the field; focus follows "+ Add task" and "Remove"; the admin-only starter is
shown disabled with its reason to a member. No cluster needed: nothing is launched."""

from __future__ import annotations

import pytest

from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def active(page) -> str:
    return page.evaluate("document.activeElement && (document.activeElement.id || document.activeElement.name)")


def fill_row(row, key="", agent="", prompt="", depends=""):
    row.locator("input[name$='-key']").fill(key)
    if agent:
        row.locator("select[name$='-agent']").select_option(agent)
    row.locator("textarea[name$='-prompt']").fill(prompt)
    row.locator("input[name$='-depends_on']").fill(depends)


def test_errors_at_once_linked_summary_and_focus(web, alice, agent_types, shots, browser):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, web.url)
    page.goto(web.url + "/batches/new/")

    # A member sees the admin-only starter, disabled, with the reason; the others are links.
    demo = page.locator(".starters .starter.disabled:has-text('Demo (no AI tool)')")
    expect(demo).to_contain_text("Demo (no AI tool)")
    expect(demo).to_contain_text("admins only")
    expect(page.locator(".starters a:has-text('Demo')")).to_have_count(0)
    # No aggregation is "all", as the result page calls it.
    expect(page.locator("#id_aggregation option:checked")).to_have_text("all, side by side")

    # "+ Add task" puts the focus in the new row; "Remove" on it gives the focus to the row before.
    rows = page.locator(".task-row")
    expect(rows).to_have_count(3)
    page.click("#add-task")
    expect(rows).to_have_count(4)
    expect(rows.nth(3).locator("input[name$='-key']")).to_be_focused()
    rows.nth(3).locator("[data-remove-row]").click()
    expect(rows).to_have_count(3)
    expect(rows.nth(2).locator("input[name$='-key']")).to_be_focused()

    # Several mistakes at once: no name, a cycle beside an unknown dependency, a row with no agent.
    page.fill("#id_name", "")
    fill_row(rows.nth(0), "a", "sh", "echo a", "b")
    fill_row(rows.nth(1), "b", "sh", "echo b", "a, zzz")
    fill_row(rows.nth(2), "c", "", "echo c")
    page.click("#build-form button[value='plan']")
    summary = page.locator("#spec-errors")
    expect(summary).to_be_visible()
    expect(summary).to_be_focused()
    items = summary.locator("li")
    expect(items).to_have_count(4)
    expect(summary).to_contain_text("Name: This field is required.")
    expect(summary).to_contain_text("dependency cycle: a → b → a")
    expect(summary).to_contain_text("unknown dependency 'zzz': no task has this key")
    expect(summary).to_contain_text("Task 3: Agent: pick an agent")
    expect(summary).not_to_contain_text("tasks[")
    expect(summary).not_to_contain_text("set 'agent' on the batch")
    shots(page, "errors")
    page.set_viewport_size({"width": 390, "height": 844})
    shots(page, "errors-phone")

    # Each link takes the focus to its field.
    summary.get_by_role("link", name="Task 3: Agent").click()
    expect(page.locator(".task-row").nth(2).locator("select[name$='-agent']")).to_be_focused()
    summary.get_by_role("link", name="Name").click()
    expect(page.locator("#id_name")).to_be_focused()
    page.set_viewport_size({"width": 1280, "height": 900})

    # The YAML box: the link selects the line of the field.
    page.goto(web.url + "/batches/new/")
    page.click("summary:has-text('Paste or upload')")
    text = "name: y\nagent: sh\ntasks:\n  - key: a\n    prompt: hi\n    depends_on: [zzz]\n"
    page.fill("#id_spec_text", text)
    page.locator("#paste-form button[value='plan']").click()
    link = page.locator("#spec-errors").get_by_role("link", name="Line 6, task 'a', depends_on")
    expect(link).to_be_visible()
    link.click()
    expect(page.locator("#id_spec_text")).to_be_focused()
    shots(page, "yaml-errors")
    selected = page.evaluate(
        "(() => { const t = document.getElementById('id_spec_text');"
        " return t.value.slice(t.selectionStart, t.selectionEnd); })()"
    )
    assert selected == "    depends_on: [zzz]"
    assert not errors, errors
