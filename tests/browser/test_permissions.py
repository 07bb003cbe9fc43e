"""A teammate without permissions walks a batch's pages in a real Chromium and is offered no action
they cannot take (each page says why instead); the result page fits a phone; the owner's retry
updates the findings table without a reload."""

from __future__ import annotations

import re
import time

import pytest

from tests.browser.conftest import expect_no_reload, still_same_document

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LONG_PATH = (
    "spawner/engine/some/really/deeply/nested/directory/structure/"
    "with_a_very_long_module_name_that_does_not_wrap_easily_at_all.py"
)
FINDER = f"""cat > "$SPAWNER_RESULT_FILE" <<'JSON'
{{"summary": "found one: see https://example.org/{LONG_PATH}?and=a_long_query_string_without_spaces",
  "verdict": "fail", "suggestions": ["quote {LONG_PATH}"], "findings": [{{"severity": "high",
  "title": "Unquoted argument reaches the shell", "file": "{LONG_PATH}", "line": 12,
  "detail": "the call in {LONG_PATH} passes user text to sh -c"}}]}}
JSON
"""
DEPLOY = """test -f MARKER || { echo 'no marker'; exit 1; }
cat > "$SPAWNER_RESULT_FILE" <<'JSON'
{"summary": "deployed", "findings": [
  {"severity": "medium", "title": "Found after the retry", "file": "deploy.sh", "line": 1}]}
JSON
"""
SPEC = """\
name: permissions journey
agent: sh
aggregation: merge
retries: 0
tasks:
  - {key: finder, prompt: "sh finder.sh"}
  - {key: deploy-check, priority: P0, prompt: "sh deploy.sh"}
"""
TEAMMATE_PW = "a-teammate-without-rights"
# What a reader without any permission may still click on these pages (links aside).
# The timeline's zoom and the log viewer's paging and search change only the reader's view.
HARMLESS = {"Filter", "Sign out", "Prompt", "Output", "Result as written", "Record", "+", "−", "Fit"}
HARMLESS |= {"Search", "First", "Previous", "Next", "Live tail", "Download full log", "Close", "Details"}


def person(name: str, password: str, *codenames: str):
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user(name, password=password)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames, content_type__app_label="spawner"))
    return user


def sign_in_as(page, url: str, name: str, password: str) -> None:
    from playwright.sync_api import expect

    page.goto(url + "/login/")
    page.fill("#id_username", name)
    page.fill("#id_password", password)
    page.click("button:has-text('Sign in')")
    expect(page.get_by_role("heading", name="Batches")).to_be_visible()


def visible_buttons(page) -> set[str]:
    return set(
        page.evaluate("""() => [...document.querySelectorAll('main button, main input[type=submit]')]
            .filter(b => b.offsetParent !== null && !b.disabled).map(b => b.textContent.trim())""")
    )


def no_sideways_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def too_wide(page) -> list[str]:
    """Elements whose content spills out sideways (to say what to fix)."""
    return page.evaluate("""() => [...document.querySelectorAll('main *')]
        .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX === 'visible'
                     && e.clientWidth > 0)
        .slice(0, 8).map(e => e.tagName + '.' + e.className + ' ' + e.scrollWidth + '>' + e.clientWidth)""")


def wait_until(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.fixture
def ended(web, agent_types, workdir):
    """A batch of olga's that ended partial: one run found something, the P0 run failed and escalated.
    (Before the browser starts: its event loop keeps the ORM out of the test's body.)"""
    from spawner import services
    from spawner.models import AgentRun, Batch, Escalation

    owner = person("olga", "olga-owns-the-batch", "add_batch", "resolve_escalation", "review_batch")
    person("tom", TEAMMATE_PW)
    (workdir / "finder.sh").write_text(FINDER)
    (workdir / "deploy.sh").write_text(DEPLOY)
    batch = services.batch_launch(
        batch_spec=services.spec_load(SPEC, is_admin=False), base_dir=workdir, owner=owner, spec_text=SPEC, spec_data={}
    )
    wait_until(lambda: Batch.objects.get(id=batch.id).status == "partial")
    wait_until(lambda: Escalation.objects.filter(batch=batch).exists())
    return batch, AgentRun.objects.get(batch=batch, key="deploy-check")


def test_a_teammate_without_permissions_sees_no_action_they_cannot_take(web, ended, shots, browser):
    from playwright.sync_api import expect

    batch, failed = ended

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in_as(page, web.url, "tom", TEAMMATE_PW)
    expect(page.locator(".page-head")).to_contain_text("Launching batches: you need the permission to launch batches")
    assert "New batch" not in page.locator(".page-head").inner_text()

    # The batch page: no retry, re-run or cancel; the reason instead.
    page.goto(f"{web.url}/batches/{batch.id}/")
    header = page.locator("#batch-header")
    expect(header.locator(".badge.big")).to_have_text("Partial · needs attention")  # its failed P0 escalated
    expect(header).to_contain_text("Retrying failed runs and re-running: you need the permission to launch batches.")
    expect(page.locator("body[data-live='on']")).to_have_count(1)
    assert visible_buttons(page) <= HARMLESS, visible_buttons(page)
    shots(page, "teammate-batch")

    # The run page: no retry.
    page.goto(f"{web.url}/runs/{failed.id}/")
    expect(page.locator("#run-header")).to_contain_text("Retrying: you need the permission to launch batches.")
    assert page.locator("#run-header button").count() == 0
    assert visible_buttons(page) <= HARMLESS, visible_buttons(page)
    shots(page, "teammate-run")

    # The result page: exports yes, review form no.
    page.goto(f"{web.url}/batches/{batch.id}/result/")
    expect(page.locator("#findings tr.finding")).to_have_count(1)
    expect(page.locator("#reviews")).to_contain_text("Reviewing: you need the permission to review results")
    expect(page.locator("#reviews textarea")).to_have_count(0)
    expect(page.locator("#result-header a:has-text('Export Markdown')")).to_be_visible()
    assert visible_buttons(page) <= HARMLESS, visible_buttons(page)
    shots(page, "teammate-result")

    # The escalations queue: the card, no forms.
    page.goto(f"{web.url}/escalations/")
    card = page.locator("article.escalation").filter(has_text="deploy-check")
    expect(card).to_contain_text("Assigning and resolving: you need the permission to assign and resolve escalations")
    expect(card.locator("form")).to_have_count(0)
    assert visible_buttons(page) <= HARMLESS, visible_buttons(page)
    shots(page, "teammate-escalations")

    # A phone: the result page does not scroll sideways, long paths wrap.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, storage_state=context.storage_state())
    small = phone.new_page()
    small.on("pageerror", lambda exc: errors.append(str(exc)))
    for path in (f"/batches/{batch.id}/result/", f"/batches/{batch.id}/", f"/runs/{failed.id}/", "/escalations/"):
        small.goto(web.url + path)
        expect(small.locator("main h1").first).to_be_visible()
        small.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")  # opened, too
        assert no_sideways_scroll(small), (path, too_wide(small))
        assert visible_buttons(small) <= HARMLESS, (path, visible_buttons(small))
        shots(small, "phone-" + (path.strip("/").replace("/", "-") or "list"))
    assert errors == []


def test_the_owners_retry_updates_the_findings_without_a_reload(web, ended, workdir, shots, browser):
    from playwright.sync_api import expect

    batch, _ = ended

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in_as(page, web.url, "olga", "olga-owns-the-batch")
    page.goto(f"{web.url}/batches/{batch.id}/result/?sort=file")
    rows = page.locator("#findings tr.finding")
    expect(rows).to_have_count(1)
    expect(page.locator("body[data-live='on']")).to_have_count(1)
    expect_no_reload(page)

    # The owner fixes the cause and retries the failed run from the batch page in another tab.
    (workdir / "MARKER").touch()
    other = context.new_page()
    other.goto(f"{web.url}/batches/{batch.id}/")
    other.click("#batch-header button:has-text('Retry failed runs')")
    # (Its notice goes once the retried attempt has ended, which here is at once: what follows shows it.)

    # The result is computed again; the findings table follows, still sorted by file.
    page.bring_to_front()
    expect(rows).to_have_count(2, timeout=30_000)
    expect(page.locator("#findings")).to_contain_text("Found after the retry")
    expect(page.locator("#findings th a.current")).to_contain_text("File")
    # The gaps and each agent's own result follow too.
    expect(page.locator("#agent-deploy-check .badge")).to_have_text("succeeded")
    expect(page.locator("#gaps")).to_have_count(0)
    assert still_same_document(page)
    assert re.search(r"sort=file", page.url)
    shots(page, "findings-updated-live")
    assert errors == []


def test_a_resolution_confirms_even_when_the_live_update_redraws_the_card_first(web, ended, shots, browser):
    """The answer to "Dismiss" is held back until the live update has redrawn the card (without its
    forms); the answer's card still lands, with its confirmation."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in_as(page, web.url, "olga", "olga-owns-the-batch")
    page.goto(web.url + "/escalations/")
    expect(page.locator("body[data-live='on']")).to_have_count(1)
    page.evaluate("""document.body.addEventListener('htmx:oobErrorNoTarget', () => { window.__oobError = true; })""")
    held = []
    page.route("**/escalations/*/resolve/", lambda route: held.append((route, route.fetch())))
    card = page.locator("article.escalation").filter(has_text="deploy-check")
    card.locator("textarea[name='note']").fill("not needed for this release")
    card.locator("button:has-text('Dismiss')").click()
    # The live update arrives first: the card is redrawn as dismissed, its forms gone.
    expect(card.locator(".resolution")).to_contain_text("Dismissed by olga", timeout=10_000)
    expect(card.locator("form")).to_have_count(0)
    assert len(held) == 1
    route, response = held[0]
    route.fulfill(response=response)
    expect(card.locator(".card-notice .notice")).to_contain_text("Dismissed.")
    assert page.evaluate("window.__oobError === true") is False
    shots(page, "dismissed-confirmed")
    assert errors == []


@pytest.fixture
def ghost_type(web, agent_types):
    from django.contrib.auth.models import User

    from spawner.models import AgentType

    User.objects.create_superuser("root", password="root-of-all-types")
    return AgentType.objects.create(name="ghost", argv=["no-such-agent-binary-xyz", "-p", "{prompt}"])


def test_the_admin_edits_an_agent_type_with_a_form_and_sees_why_it_is_unavailable(web, ghost_type, shots, browser):
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    sign_in_as(page, web.url, "root", "root-of-all-types")
    page.goto(f"{web.url}/admin/spawner/agenttype/")
    expect(page.locator("#result_list")).to_contain_text("not available: 'no-such-agent-binary-xyz' is not on")
    page.goto(f"{web.url}/admin/spawner/agenttype/{ghost_type.id}/change/")
    expect(page.locator(".field-availability")).to_contain_text("is not on this server's PATH")
    expect(page.locator("textarea[name='argv']")).to_have_value("no-such-agent-binary-xyz\n-p\n{prompt}")
    page.fill("textarea[name='env']", "LANG=C.UTF-8\nnot a variable")
    page.click("input[name='_continue']")
    expect(page.locator(".field-env .errorlist")).to_contain_text("Environment, line 2: write NAME=value")
    shots(page, "admin-agent-type-error")
    # Engine records: no add button, no save.
    page.goto(f"{web.url}/admin/spawner/batch/")
    expect(page.locator("a[href$='/admin/spawner/batch/add/']")).to_have_count(0)
    expect(page.locator("a[href$='/admin/spawner/agenttype/add/']").first).to_be_visible()
