"""Timings that agree with each other, and states you can read, on the pages.

Batches are moved through the engine's transitions, then their attempts are placed at chosen
moments so each figure can be checked against its definition (spawner/core/timings.py).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import transaction
from django.utils import timezone

from spawner import services
from spawner.engine import dispatch, transitions
from spawner.models import AgentRun, Batch, RunAttempt, RunEvent
from tests.dashboard.conftest import move

pytestmark = pytest.mark.django_db

T0 = timezone.now().replace(microsecond=0) - timedelta(hours=1)


def at(seconds: float):
    return T0 + timedelta(seconds=seconds)


def place(batch: Batch, key: str, number: int, queued: float, started: float, finished: float) -> None:
    RunAttempt.objects.filter(run__batch=batch, run__key=key, number=number).update(
        queued_at=at(queued), started_at=at(started), finished_at=at(finished)
    )


def end(batch: Batch, status: str, when: float) -> Batch:
    """End the batch at `when` with the figures the engine stores."""
    Batch.objects.filter(id=batch.id).update(launched_at=T0)
    batch.refresh_from_db()
    with transaction.atomic():
        if batch.status != "running":
            transitions.batch_reopen(batch)
        figures = dispatch.batch_measure(batch, end=at(when)).stored()
        transitions.batch_end(batch, status, figures=figures, now=at(when))
    RunEvent.objects.filter(id=RunEvent.objects.filter(batch=batch).latest("id").id).update(created_at=at(when))
    batch.refresh_from_db()
    return batch


def run(batch: Batch, key: str) -> AgentRun:
    return AgentRun.objects.get(batch=batch, key=key)


@pytest.fixture
def retried_pair(member, make_batch):
    """A parallel batch whose lint failed, retried by a person 16 s after the batch ended, and its
    sequential re-run. Parallel: build 0-2, lint 0-3 (failed), test 2-4, ends at 4; lint again
    20-23. Sequential: build 0-2, test 2-4, lint 4-7."""
    parallel = make_batch(member)
    for key in ("build", "lint", "test"):
        move(move(run(parallel, key), "running"), "failed" if key == "lint" else "succeeded")
    place(parallel, "build", 1, 0, 0, 2)
    place(parallel, "lint", 1, 0, 0, 3)
    place(parallel, "test", 1, 2, 2, 4)
    parallel = end(parallel, "partial", 4)
    services.run_retry(run=run(parallel, "lint"), actor=member)
    RunEvent.objects.filter(batch=parallel, kind="batch.reopened").update(created_at=at(20))
    move(move(run(parallel, "lint"), "running"), "succeeded")
    place(parallel, "lint", 2, 20, 20, 23)
    parallel = end(parallel, "succeeded", 23)

    sequential = make_batch(member)
    Batch.objects.filter(id=sequential.id).update(sequential_of=parallel, mode="sequential")
    sequential.refresh_from_db()
    for key in ("build", "test", "lint"):
        move(move(run(sequential, key), "running"), "succeeded")
    place(sequential, "build", 1, 0, 0, 2)
    place(sequential, "test", 1, 2, 2, 4)
    place(sequential, "lint", 1, 4, 4, 7)
    sequential = end(sequential, "succeeded", 7)
    return parallel, sequential


def test_the_batch_page_says_busy_since_launch_and_idle_and_they_add_up(signed_in, retried_pair):
    parallel, _ = retried_pair
    assert parallel.wall_seconds == pytest.approx(7)  # 0-4 and 20-23
    html = signed_in.get(f"/batches/{parallel.id}/").content.decode()
    wall = re.search(r'id="batch-wall".*?</div>', html, re.S)[0]
    assert "7.0 s" in wall and "23.0 s</span> since launch" in wall and "16.0 s idle waiting for a retry" in wall
    assert "data-running" not in wall  # ended: the clocks stand still
    # Work counts every attempt, the retry included: 2 + 3 + 2 + 3.
    assert re.search(r"Work \(all attempts\)</dt><dd>10\.0 s", html)
    # The timeline's legend uses the same since-launch figure.
    assert re.search(r'<span class="clock">23\.0 s</span> since launch, idle gaps included', html)


def test_the_comparison_shows_one_speedup_the_same_in_headline_and_table(signed_in, retried_pair):
    parallel, sequential = retried_pair
    html = signed_in.get(f"/batches/{parallel.id}/compare/").content.decode()
    text = re.sub(r"<[^>]+>", "", html)
    # Own passes: parallel 4 s (the person's retry left out), sequential 7 s: 7 / 4.
    assert re.search(r'id="headline-speedup">1\.75×<', html)
    assert re.search(r'id="table-speedup">1\.75×<', html)
    assert set(re.findall(r"\d+\.\d+×", text)) == {"1.75×"}
    assert "took 4.0 s" in text and "instead of 7.0 s" in text
    assert "1 attempt a person asked for afterwards is left out" in text
    # What was left out is shown, with the batch page's figures.
    assert "wall 7.0 s busy, 23.0 s since launch, 16.0 s idle waiting for a retry" in text
    assert "1 attempt (3.0 s) not counted above" in text


def test_a_running_batch_and_its_running_runs_carry_ticking_clocks(signed_in, member, make_batch):
    batch = make_batch(member)
    move(run(batch, "build"), "running")
    Batch.objects.filter(id=batch.id).update(launched_at=timezone.now() - timedelta(seconds=30))
    AgentRun.objects.filter(batch=batch, key="build").update(
        started_at=timezone.now() - timedelta(seconds=20), duration_seconds=None
    )
    html = signed_in.get(f"/batches/{batch.id}/").content.decode()
    wall = re.search(r'id="batch-wall".*?</div>', html, re.S)[0]
    clocks = [float(v) for v in re.findall(r'data-clock="([\d.]+)" data-running', wall)]
    assert len(clocks) == 2 and all(29 <= c <= 40 for c in clocks), clocks
    row = re.search(rf'id="run-{run(batch, "build").id}".*?</tr>', html, re.S)[0]
    (value,) = re.findall(r'data-clock="([\d.]+)" data-running', row)
    assert 19 <= float(value) <= 30
    assert "when it ends" in html  # ratios wait for the end instead of showing a stale snapshot
    # The run page ticks too.
    page = signed_in.get(f"/runs/{run(batch, 'build').id}/").content.decode()
    assert re.search(r'<dt[^>]*>Duration</dt><dd><span class="clock" data-clock="(2\d|1\d)\.\d+" data-running', page)


def test_a_cancelled_run_shows_how_long_it_ran(signed_in, member, make_batch):
    batch = make_batch(member)
    build = move(run(batch, "build"), "running")
    RunAttempt.objects.filter(run=build, number=1).update(started_at=timezone.now() - timedelta(seconds=25))
    services.run_cancel(run=build, actor=member)
    build.refresh_from_db()
    assert build.status == "cancelled" and build.duration_seconds == pytest.approx(25, abs=2)
    html = signed_in.get(f"/batches/{batch.id}/").content.decode()
    row = re.search(rf'id="run-{build.id}".*?</tr>', html, re.S)[0]
    assert re.search(r'<span class="clock">2\d\.\d s</span>', row)
    page = signed_in.get(f"/runs/{build.id}/").content.decode()
    assert re.search(r'Duration</dt><dd><span class="clock">2\d\.\d s</span>', page)


def test_a_failed_p0_run_needs_attention_in_the_list_and_on_its_page(signed_in, member, make_batch):
    p0 = make_batch(member)
    AgentRun.objects.filter(batch=p0, key="lint").update(priority=0)
    move(move(run(p0, "lint"), "running"), "failed", error="exit code 1")
    p0 = end(p0, "partial", 5)
    p2 = make_batch(member)
    AgentRun.objects.filter(batch=p2, key="lint").update(priority=2)
    move(move(run(p2, "lint"), "running"), "failed", error="exit code 1")
    p2 = end(p2, "partial", 5)

    html = signed_in.get("/").content.decode()
    p0_row = re.search(rf'id="batch-{p0.id}".*?</tr>', html, re.S)[0]
    p2_row = re.search(rf'id="batch-{p2.id}".*?</tr>', html, re.S)[0]
    assert "Partial · needs attention" in p0_row and "1 open escalation<" in p0_row
    assert "badge batch-state attention" in p0_row
    assert "needs attention" not in p2_row and "open escalation" not in p2_row
    assert 'class="badge batch-state partial"' in p2_row
    assert 'title="1 failed"' in p0_row  # progress segments say what they are

    page = signed_in.get(f"/batches/{p0.id}/").content.decode()
    assert "Partial · needs attention" in page and "1 open escalation<" in page


def test_a_retry_notice_names_what_makes_it_stale_and_a_refusal_does_not(signed_in, member, make_batch):
    batch = make_batch(member)
    lint = move(move(run(batch, "lint"), "running"), "failed")
    answer = signed_in.post(f"/batches/{batch.id}/retry-failed/", headers={"HX-Request": "true"})
    body = answer.content.decode()
    assert "Retrying 1 run: lint." in body
    assert f'data-about="run-{lint.id}:1"' in body
    again = signed_in.post(f"/batches/{batch.id}/retry-failed/", headers={"HX-Request": "true"})
    assert again.status_code == 409 and "data-about" not in again.content.decode()


def test_no_message_counts_with_a_bracketed_s():
    root = Path(__file__).resolve().parents[2]
    found = []
    for folder in ("spawner", "dashboard", "templates", "static", "examples"):
        for path in (root / folder).rglob("*"):
            if path.suffix in {".py", ".html", ".js"}:
                for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                    said = re.sub(r"\b(str|len|join|search|split)\(s\)|http\(s\)", "", line)  # calls, URLs
                    if re.search(r"[a-z]\(s\)", said):
                        found.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert found == []
