"""Every example in examples/ pasted into the new-batch page of a real Chromium: previewed, and
launched on a real cluster when this server has its agent types; when it has not, the plan says
which and why, and its Launch button is disabled (never a refusal after clicking)."""

from __future__ import annotations

import re
from io import StringIO

import pytest

from tests.browser.conftest import PASSWORD, sign_in
from tests.conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.fixture
def workdir(tmp_path, transactional_db, agent_types):
    """The browser's base directory laid out as the repository root the examples are written for:
    their scripts and the code they read, and the demo repository `manage.py spawner_demo` makes."""
    from django.core.management import call_command

    base = tmp_path / "base"
    base.mkdir()
    for name in ("examples", "spawner"):
        (base / name).symlink_to(ROOT / name, target_is_directory=True)
    call_command("spawner_demo", "--repo", str(base / "var" / "demo-repo"), stdout=StringIO())
    # The preset agent types (an earlier transactional test empties the tables the migration filled).
    call_command("spawner_presets", stdout=StringIO())
    return base


@pytest.fixture
def expected(workdir):
    """Per example: (whether this server can run every agent type it names, those it cannot)."""
    from spawner import services
    from spawner.models import AgentType

    types = {t.name: t for t in AgentType.objects.all()}
    found = {}
    for path in EXAMPLES:
        names = {t.agent for t in services.spec_load(path.read_text(), is_admin=True).tasks}
        missing = sorted(n for n in names if not types[n].available)
        found[path.stem] = (not missing, [(n, types[n].unavailable_reason) for n in missing])
    return found


@pytest.fixture
def admin_alice(transactional_db):
    from django.contrib.auth.models import User

    return User.objects.create_superuser("alice", password=PASSWORD)


def test_every_example_previews_and_launches_or_says_why_not(web, admin_alice, expected, shots, browser):
    from playwright.sync_api import expect

    assert len(EXAMPLES) >= 6
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, web.url)

    launched, refused = [], []
    for path in EXAMPLES:
        page.goto(web.url + "/batches/new/")
        page.click("summary:has-text('Paste or upload')")
        page.fill("#id_spec_text", path.read_text())
        page.locator("#paste-form button[value='plan']").click()
        plan = page.locator("#plan")
        expect(plan).to_be_visible()
        expect(page.locator("#spec-errors")).to_have_count(0)
        checks = page.locator("#launch-checks")
        runnable, missing = expected[path.stem]
        if not runnable:
            # Said before anyone clicks: the check fails, with the type and why, and Launch is disabled.
            agents = checks.locator("li[data-check='agents-available']")
            expect(agents).to_have_class("bad")
            for name, why in missing:
                expect(agents).to_contain_text(name)
                expect(page.locator("#launch-refused")).to_contain_text(why)
            expect(plan.get_by_role("button", name="Launch this plan")).to_be_disabled()
            expect(page.locator("#paste-form button[value='launch']")).to_be_disabled()
            expect(checks.locator("li.bad")).to_have_count(1)  # nothing else stands in the way
            shots(page, f"{path.stem}-refused")
            page.set_viewport_size({"width": 390, "height": 844})
            shots(page, f"{path.stem}-refused-phone")
            page.set_viewport_size({"width": 1280, "height": 900})
            refused.append(path.stem)
            continue
        expect(checks.locator("li.bad")).to_have_count(0)
        shots(page, f"{path.stem}-plan")
        plan.get_by_role("button", name="Launch this plan").click()
        expect(page).to_have_url(re.compile(r"/batches/\d+/$"), timeout=20_000)
        # It runs here: the batch ends succeeded (the review's and health's scripts, the scripted coding agent).
        expect(page.locator(".badge.big")).to_have_class(re.compile(r"\bsucceeded\b"), timeout=180_000)
        launched.append(path.stem)

    assert sorted(launched + refused) == sorted(p.stem for p in EXAMPLES)
    assert {"health", "review", "sleepers", "waves", "parallel-coding"} <= set(launched)
    assert not errors, errors
