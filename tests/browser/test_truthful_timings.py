"""Timings that agree with each other and states you can read, in a real Chromium against daphne
and a real cluster: clocks tick while a batch runs, the comparison shows one speedup as defined,
and a batch whose P0 run failed looks like it needs attention."""

from __future__ import annotations

import concurrent.futures
import contextlib
import re
import shutil
import time

import pytest

from tests.browser.conftest import expect_no_reload, sign_in, still_same_document
from tests.spawner.helpers import launch

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

SHOTS = "/work/helper/shots"


def in_thread(fn):
    """Run Django ORM code off Playwright's event loop (the ORM is synchronous)."""

    def call():
        from django.db import connection

        try:
            return fn()
        finally:
            connection.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result(timeout=30)


def keep(path, name: str) -> None:
    """A copy of a screenshot where people look at them, when that place exists."""
    with contextlib.suppress(OSError):
        shutil.copy(path, f"{SHOTS}/timings-{name}.png")


def seconds_of(text: str) -> float:
    """ "12.3 s" or "2 min 05 s" as seconds."""
    text = text.strip()
    if m := re.fullmatch(r"(\d+) min (\d+) s", text):
        return int(m[1]) * 60 + int(m[2])
    m = re.fullmatch(r"(\d+(?:\.\d+)?) s", text)
    assert m, f"not a duration: {text!r}"
    return float(m[1])


@pytest.fixture
def launcher(web, alice, agent_types, workdir):
    """launch(spec) -> batch id, callable once the page is open."""
    return lambda text: in_thread(lambda: launch(text, workdir, owner=alice).id)


SLEEPERS = (
    "name: ticking\nagent: sleep\nmax_parallel: 2\ntasks:\n  - {key: a, prompt: '6'}\n  - {key: b, prompt: '6'}\n"
)


def test_the_wall_clock_and_running_durations_tick_while_a_batch_runs(web, launcher, shots, browser):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, web.url)
    batch_id = launcher(SLEEPERS)

    page.goto(f"{web.url}/batches/{batch_id}/")
    expect_no_reload(page)
    rows = page.locator("#run-rows")
    expect(rows.locator(".badge.running")).to_have_count(2, timeout=15_000)
    wall = page.locator("#batch-wall dd > .clock")
    since = page.locator("#batch-wall .note .clock")
    running = page.locator("#run-rows tr:has(a:text-is('a')) td.duration .clock")
    expect(running).to_have_attribute("data-running", "")
    first = (seconds_of(wall.inner_text()), seconds_of(since.inner_text()), seconds_of(running.inner_text()))
    time.sleep(2.2)
    second = (seconds_of(wall.inner_text()), seconds_of(since.inner_text()), seconds_of(running.inner_text()))
    # No event arrives while both sleep: the page ticks on its own, about one second a second.
    for before, after in zip(first, second, strict=True):
        assert 1.5 <= after - before <= 4.0, (first, second)
    # The run's duration never runs ahead of the batch's wall time.
    assert second[2] <= second[0] + 0.5
    shot = shots(page, "ticking")
    keep(shot, "1-ticking")

    # When the batch ends the clocks stop at the figures the server measured.
    expect(page.locator("#batch-header .badge.big")).to_have_text("Succeeded", timeout=20_000)
    expect(page.locator("#batch-wall dd > .clock[data-running]")).to_have_count(0)
    ended = seconds_of(wall.inner_text())
    assert 6.0 <= ended <= 12.0, ended
    durations = [seconds_of(t) for t in page.locator("#run-rows td.duration").all_inner_texts()]
    assert all(5.5 <= d <= ended for d in durations), (durations, ended)
    time.sleep(1.2)
    assert seconds_of(wall.inner_text()) == ended
    assert still_same_document(page)
    keep(shots(page, "ended"), "1-ended")
    assert errors == []


FLAKY = "test -f marker || { touch marker; sleep 1; echo 'first try fails'; exit 1; }; sleep 1; echo fine"
RETRIED = f"""\
name: retried
agent: sh
max_parallel: 3
retries: 0
tasks:
  - {{key: a, prompt: "sleep 2"}}
  - {{key: b, prompt: "sleep 2"}}
  - {{key: flaky, prompt: "{FLAKY}"}}
"""


def own_pass_walls(parallel_id: int) -> tuple[float, float, float]:
    """(parallel wall without the person's retry, the same with it, the sequential re-run's wall), from the
    attempts' rows: here nothing waits, so the busy time of the first pass is launch to last first-attempt end."""
    from spawner.models import Batch, RunAttempt

    parallel = Batch.objects.get(id=parallel_id)
    sequential = Batch.objects.get(sequential_of=parallel)
    firsts = RunAttempt.objects.filter(run__batch=parallel, number=1)
    own = (max(a.finished_at for a in firsts) - parallel.launched_at).total_seconds()
    return own, parallel.wall_seconds, sequential.wall_seconds


def test_the_comparison_shows_one_speedup_sequential_wall_over_parallel_wall(web, launcher, shots, browser):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, web.url)
    batch_id = launcher(RETRIED)
    batch_url = f"{web.url}/batches/{batch_id}/"

    page.goto(batch_url)
    expect(page.locator("#batch-header .badge.big")).to_have_text("Partial", timeout=20_000)
    time.sleep(2)  # an idle gap before the person's retry

    # The retry's notice can be closed, and goes away by itself once the retried attempt has ended.
    page.click("#run-rows a:text-is('flaky')")
    expect_no_reload(page)
    page.click("#run-header button:has-text('Retry')")
    notice = page.locator("#notice")
    expect(notice).to_contain_text("Retrying 'flaky'")
    expect(notice.locator(".notice-close")).to_be_visible()
    expect(page.locator("#run-header .badge")).to_have_text("Succeeded", timeout=20_000)
    expect(page.locator("#notice")).to_have_text("", timeout=5_000)
    assert still_same_document(page)

    # The batch page names the idle gap instead of dropping it.
    page.goto(batch_url)
    expect(page.locator("#batch-header .badge.big")).to_have_text("Succeeded", timeout=20_000)
    expect(page.locator("#batch-wall")).to_contain_text("idle waiting for a retry")
    busy = seconds_of(page.locator("#batch-wall dd > .clock").inner_text())
    since = seconds_of(page.locator("#batch-wall .note .clock").inner_text())
    assert since >= busy + 2, (busy, since)
    keep(shots(page, "batch-after-retry"), "2-batch-after-retry")

    page.click("button:has-text('Re-run sequentially')")
    expect(page).to_have_url(re.compile(r"/batches/\d+/compare/$"), timeout=10_000)
    comparison = page.locator("#comparison")
    expect(comparison.locator("#headline-speedup")).to_be_visible(timeout=60_000)
    headline = page.locator("#headline-speedup").inner_text()
    table = page.locator("#table-speedup").inner_text()
    assert headline == table
    # One ratio on the page: the same number in the headline and the table, nothing else with a ×.
    ratios = set(re.findall(r"\d+\.\d+×", comparison.inner_text()))
    assert ratios == {headline}, ratios
    expect(comparison).to_contain_text("1 attempt a person asked for afterwards is left out")
    shown = float(headline.rstrip("×"))

    own, with_retry, sequential = in_thread(lambda: own_pass_walls(batch_id))
    assert shown == pytest.approx(sequential / own, abs=0.02), (shown, sequential, own)
    assert with_retry > own + 0.5  # counting the retry would have been another, smaller ratio
    assert shown > sequential / with_retry + 0.05
    keep(shots(page, "compare"), "2-compare")
    assert errors == []


P0_FAILS = """\
name: p0 fails
agent: sh
retries: 0
tasks:
  - {key: deploy-check, priority: P0, prompt: "echo missing; exit 1"}
  - {key: note, priority: P2, prompt: "true"}
  - {key: docs, prompt: "true"}
"""
P2_FAILS = """\
name: p2 fails
agent: sh
retries: 0
tasks:
  - {key: note, priority: P2, prompt: "exit 1"}
  - {key: docs, prompt: "true"}
"""


def test_a_batch_whose_p0_run_failed_looks_like_it_needs_attention(web, launcher, shots, browser):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, web.url)
    p0 = launcher(P0_FAILS)
    p2 = launcher(P2_FAILS)

    page.goto(web.url + "/")
    p0_row, p2_row = page.locator(f"#batch-{p0}"), page.locator(f"#batch-{p2}")
    expect(p0_row.locator(".badge")).to_have_text("Partial · needs attention", timeout=20_000)
    expect(p0_row.locator(".esc-count")).to_have_text("⚠ 1 open escalation")
    expect(p0_row.locator(".badge.attention")).to_have_attribute("title", re.compile("1 open escalation: a person"))
    # A failed P2 note is only partial: no escalation, not the same look.
    expect(p2_row.locator(".badge")).to_have_text("Partial", timeout=20_000)
    expect(p2_row.locator(".esc-count")).to_have_count(0)
    assert "attention" not in (p2_row.locator(".badge").get_attribute("class") or "")
    # Progress segments say what they are on hover.
    expect(p0_row.locator(".seg.failed")).to_have_attribute("title", "1 failed")
    keep(shots(page, "list"), "3-list")

    page.goto(f"{web.url}/batches/{p0}/")
    expect(page.locator("#batch-header .badge.big")).to_have_text("Partial · needs attention")
    expect(page.locator("#batch-header")).to_contain_text("1 open escalation")
    keep(shots(page, "batch"), "3-batch")

    # On a phone the tables that scroll sideways say so.
    phone = browser.new_context(viewport={"width": 390, "height": 844})
    small = phone.new_page()
    sign_in(small, web.url)
    expect(small.locator("#batch-table .scroll-hint.shown")).to_contain_text("scroll →")
    keep(shots(small, "phone-list"), "3-phone-list")
    small.goto(f"{web.url}/batches/{p0}/")
    expect(small.locator(".scroll-hint.shown").first).to_be_visible()
    keep(shots(small, "phone-batch"), "3-phone-batch")
    assert errors == []
