"""A real agent writes 100,000 lines (its first attempt fails, its second works); the run page stays
short, searches the whole log, opens a linked line on its page, marks stderr, and shows the first
attempt's log from the attempt selector."""

from __future__ import annotations

import concurrent.futures
import re
import time
from pathlib import Path

import pytest

from tests.browser.conftest import sign_in
from tests.spawner.helpers import launch, wait_batch

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]
SHOTS = Path("/work/helper/shots")

# Attempt 1: a line to find, a line on stderr, then it fails. Attempt 2: three warnings on stderr
# (paced, so that they keep their place), then 100,000 numbered lines on stdout.
SCRIPT = (
    'm="$(dirname "$SPAWNER_RESULT_FILE")/big.tried"; '
    'if [ ! -e "$m" ]; then : > "$m"; echo "first try output"; echo "first try failed on stderr" >&2; exit 3; fi; '
    'echo "second try starts"; for i in 1 2 3; do echo "warning $i on stderr" >&2; sleep 0.1; done; '
    "seq 1 100000"
)
SPEC = f"""
name: big log
agent: sh
retries: 1
tasks:
  - key: big
    prompt: '{SCRIPT}'
"""
GAP = "(b => b.scrollHeight - b.scrollTop - b.clientHeight)(document.getElementById('log-scroll'))"
# Line numbers of attempt 2's log: 1 "second try starts", 2-4 warnings, then n is line n + 4.


def in_thread(fn):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=120)


def shot(page, shots, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"logs-{name}.png"), full_page=True)
    shots(page, name)


def test_a_100000_line_log(web, alice, agent_types, browser, shots, tmp_path):
    from playwright.sync_api import expect

    batch = in_thread(lambda: wait_batch(launch(SPEC, tmp_path), timeout=90))
    run = in_thread(lambda: batch.runs.get(key="big"))
    assert run.status == "succeeded" and run.attempt == 2

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, web.url)
    page.goto(f"{web.url}/runs/{run.id}/")
    tail = page.locator("#run-tail")
    expect(tail.locator("#L100004")).to_contain_text("100000")
    # The tail starts at a whole line, numbered.
    first = tail.locator(".l").first
    assert re.fullmatch(r"\d+\s*\d+", first.inner_text().strip())
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height < 5000, f"the page is {height} px tall"
    # Following: the log box is scrolled to its end.
    assert page.evaluate(GAP) < 30
    shot(page, shots, "tail")

    # Search the whole log; the result links to its line, which opens on its page, marked.
    page.fill(".log-search input[name=q]", "77777")
    page.click(".log-search button")
    hit = page.locator("#log-results a.hit")
    expect(hit).to_have_count(1)
    expect(hit).to_contain_text("77781")
    shot(page, shots, "search")
    hit.click()
    line = page.locator("#L77781")
    expect(line).to_have_class(re.compile(r"\bhl\b"))
    expect(line).to_be_in_viewport()
    expect(page.locator("#output")).to_have_attribute("data-mode", "page")
    expect(page.locator(".log-pager")).to_contain_text("Lines 77001–78000")
    assert page.url.endswith("#L77781")
    assert page.evaluate("document.documentElement.scrollHeight") < 5000
    shot(page, shots, "search-hit")
    # Back to the live tail: it follows again.
    page.click(".log-pager a.live-tail")
    expect(page.locator("#output")).to_have_attribute("data-mode", "tail")
    expect(page.locator("#log-follow")).to_be_checked()
    assert page.evaluate(GAP) < 30

    # A link to a line opened directly.
    page.goto(f"{web.url}/runs/{run.id}/#L1234")
    line = page.locator("#L1234")
    expect(line).to_have_class(re.compile(r"\bhl\b"))
    expect(line).to_be_in_viewport()
    expect(line).to_contain_text("1230")
    shot(page, shots, "line-link")

    # stderr lines look different from stdout lines.
    page.goto(f"{web.url}/runs/{run.id}/#L3")
    warning, plain = page.locator("#L3"), page.locator("#L1")
    expect(warning).to_contain_text("warning 2 on stderr")
    expect(warning).to_have_class(re.compile(r"\berr\b"))
    expect(plain).not_to_have_class(re.compile(r"\berr\b"))
    colour = "el => getComputedStyle(el.querySelector('.t')).color"
    assert warning.evaluate(colour) != plain.evaluate(colour)
    shot(page, shots, "stderr")

    # The first attempt's log, from the attempt selector.
    page.click(".attempt-picker a:text-is('1')")
    expect(page.locator("#output h2")).to_have_text("Output of attempt 1")
    expect(page.locator("#a1-L1")).to_contain_text("first try output")
    expect(page.locator("#a1-L2")).to_contain_text("first try failed on stderr")
    expect(page.locator("#a1-L2")).to_have_class(re.compile(r"\berr\b"))
    shot(page, shots, "attempt-1")

    # On a phone: the tools wrap, the page does not scroll sideways (the log box does).
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{web.url}/runs/{run.id}/")
    expect(page.locator("#L100004")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    shot(page, shots, "phone")

    # Server time of a page and of a search on the 100,000-line log (figures for people; loose bound).
    base = f"{web.url}/runs/{run.id}/attempts/2"
    timings = {}
    for name, url in [("page", f"{base}/lines/?page=50"), ("search", f"{base}/search/?q=99999")]:
        started = time.perf_counter()
        response = page.request.get(url)
        timings[name] = time.perf_counter() - started
        assert response.status == 200
    page_ms, search_ms = timings["page"] * 1000, timings["search"] * 1000
    print(f"\n100,000-line log over HTTP: page {page_ms:.0f} ms, search {search_ms:.0f} ms")
    assert timings["page"] < 5 and timings["search"] < 10


SLOW = """
name: slow log
agent: sh
tasks:
  - key: slow
    prompt: 'for i in $(seq 1 400); do echo "tick $i"; sleep 0.03; done'
"""


def test_following_the_live_tail_and_staying_put(web, alice, agent_types, browser, shots, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, web.url)
    batch = in_thread(lambda: launch(SLOW, tmp_path))
    run = in_thread(lambda: batch.runs.get(key="slow"))
    page.goto(f"{web.url}/runs/{run.id}/")
    tail = page.locator("#run-tail")
    expect(tail).to_contain_text("tick 60", timeout=20_000)
    # Following: new lines arrive and the box stays at its end.
    expect(tail).to_contain_text("tick 100", timeout=20_000)
    assert page.evaluate(GAP) < 30
    assert page.locator("#log-follow").is_checked()
    # Not following: the view stays as it is while the agent goes on.
    page.uncheck("#log-follow")
    page.evaluate("document.getElementById('log-scroll').scrollTop = 0")
    seen = tail.inner_text()
    time.sleep(1.5)
    assert tail.inner_text() == seen, "the tail changed while not following"
    assert page.evaluate("document.getElementById('log-scroll').scrollTop") == 0
    shot(page, shots, "not-following")
    # Following again: the newest lines, at the end of the box.
    page.check("#log-follow")
    expect(tail).to_contain_text("tick 400", timeout=30_000)
    expect(page.locator("#run-header .badge")).to_have_text("Succeeded", timeout=20_000)
    assert page.evaluate(GAP) < 30
    shot(page, shots, "followed-to-end")


def test_setup_and_gate_output_is_folded(web, alice, agent_types, browser, shots, tmp_path):
    """A worktree run's log (as the workspace writes it): setup and gate sections start folded; a
    link to a line inside one opens it."""
    from playwright.sync_api import expect

    batch = in_thread(lambda: wait_batch(launch(SLOW.replace("400", "3"), tmp_path), timeout=60))
    run = in_thread(lambda: batch.runs.get(key="slow"))
    attempt = in_thread(lambda: run.attempts.get(number=1))
    setup = "".join(f"installing package {i}\n" for i in range(1, 41))
    log = (
        f"── spawner setup: pip install -r requirements.txt ──\n{setup}── spawner setup: exit 0 ──\n"
        "\x1b[32magent\x1b[0m: did the work\n"
        "── spawner gate: pytest -q ──\n\x1b[31mFAILED\x1b[0m test_x.py::test_y\n1 failed\n── spawner gate: exit 1 ──\n"
    )
    Path(attempt.log_path).write_text(log)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, web.url)
    page.goto(f"{web.url}/runs/{run.id}/")
    sections = page.locator("#run-tail details.log-section")
    expect(sections).to_have_count(2)
    assert not sections.nth(0).evaluate("d => d.open") and not sections.nth(1).evaluate("d => d.open")
    expect(sections.nth(0).locator("summary")).to_contain_text("Setup")
    expect(sections.nth(1).locator("summary")).to_contain_text("failed, exit 1")
    expect(page.locator("#L43")).to_be_visible()  # the agent's own output stays open
    expect(page.locator("#L43 .ansi-green")).to_have_text("agent")  # colours kept
    shot(page, shots, "sections-folded")
    page.goto(f"{web.url}/runs/{run.id}/#L20")
    expect(page.locator("#L20")).to_be_in_viewport()
    assert sections.nth(0).evaluate("d => d.open")
    shot(page, shots, "section-opened-by-link")
