"""Coding agents in parallel, in a real Chromium against daphne and a real cluster: a worktree batch
launched from the new-batch page, two runs editing the same lines and one another file; the merge
queue appears, the conflict shows in the matrix, a person keeps one side in the page, the step
merges and the integration branch's diff holds every run's change."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import ARTIFACTS, PASSWORD, expect_no_reload, sign_in, still_same_document
from tests.spawner.test_workspaces import make_repo

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SPEC = """\
name: parallel-coding
agent: sh
max_parallel: 3
workspace:
  repo: repo
  isolation: worktree
  merge: sequential
tasks:
  - {key: alpha, prompt: 'printf "one\\nfrom alpha\\nthree\\n" > README.md; echo alpha > alpha.txt'}
  - {key: beta, prompt: 'printf "one\\nfrom beta <script>alert(1)</script>\\nthree\\n" > README.md'}
  - {key: gamma, prompt: 'echo gamma > gamma.txt'}
"""


@pytest.fixture
def admin_alice(transactional_db):
    from django.contrib.auth.models import User

    return User.objects.create_superuser("alice", password=PASSWORD)


def test_launch_parallel_coding_resolve_the_conflict_in_the_page(
    web, admin_alice, agent_types, workdir, shots, browser
):
    from playwright.sync_api import expect

    make_repo(workdir / "repo", {"README.md": "one\ntwo\nthree\n", "src/app.py": "x = 1\n"})
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    alerts: list[str] = []
    page.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.accept()))
    sign_in(page, web.url)

    # Launch from the new-batch page, pasting the spec.
    page.goto(web.url + "/batches/new/")
    page.click("summary:has-text('Paste or upload')")
    page.fill("#id_spec_text", SPEC)
    page.locator("#paste button[value='launch']").click()
    expect(page).to_have_url(re.compile(r"/batches/\d+/$"), timeout=20_000)
    batch_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    expect_no_reload(page)
    section = page.locator("#merge-section")
    expect(section).to_contain_text("The queue starts when the batch ends")

    # The runs finish, the queue appears live: alpha and gamma merged, beta in conflict.
    for key in ("alpha", "beta", "gamma"):
        expect(page.locator(f"#run-rows tr:has-text('{key}') .badge")).to_have_text("Succeeded", timeout=30_000)
    steps = section.locator("tr.merge-step")
    expect(steps).to_have_count(3, timeout=30_000)
    expect(section.locator("tr[data-state='conflict']")).to_contain_text("beta", timeout=30_000)
    expect(section.locator("tr[data-state='merged']")).to_have_count(2, timeout=30_000)
    expect(section.locator("tr[data-state='conflict']")).to_contain_text("⚠ conflict")
    assert still_same_document(page)

    # The conflict matrix: alpha x beta on README.md, both ways; gamma conflicts with nothing.
    matrix = section.locator("table.matrix")
    expect(matrix.locator("tr:has(th:text-is('alpha')) td.clash").first).to_contain_text("README.md")
    expect(matrix.locator("tr:has(th:text-is('beta')) td.clash").first).to_contain_text("README.md")
    expect(matrix.locator("tr:has(th:text-is('gamma')) td.clash")).to_have_count(0)

    # The hunks, ours and theirs, with the agent's <script> shown as text (no dialog opened).
    conflict = section.locator(".conflict-box")
    expect(conflict.locator(".side.ours pre")).to_contain_text("from alpha")
    expect(conflict.locator(".side.theirs pre")).to_contain_text("from beta <script>alert(1)</script>")
    shots(page, "conflict-desktop")
    page.set_viewport_size({"width": 390, "height": 844})
    shots(page, "conflict-phone")
    section.screenshot(path=str(ARTIFACTS / "test_parallel_coding-merge-section-phone.png"))
    page.set_viewport_size({"width": 1280, "height": 900})

    # Keep beta's side: the step merges, live.
    conflict.locator("input[name='side:README.md'][value='theirs']").check()
    conflict.locator("button:has-text('Keep these sides and merge')").click()
    expect(page.locator("#notice")).to_contain_text("Keeping README.md: theirs for 'beta'")
    expect(section.locator("tr[data-state='merged']")).to_have_count(3, timeout=30_000)
    expect(section.locator(".conflict-box")).to_have_count(0)
    beta = section.locator("tr[data-state='merged']:has-text('beta')")
    expect(beta).to_contain_text("by alice")
    expect(beta.locator("code")).to_have_text(re.compile(r"^[0-9a-f]{10}$"))

    # The integration branch holds the three runs' changes.
    diff = section.locator(".integration-diff")
    expect(diff).to_contain_text("from beta <script>alert(1)</script>", timeout=15_000)
    expect(diff).to_contain_text("alpha.txt")
    expect(diff).to_contain_text("gamma.txt")
    expect(section.locator("ul.diff-summary li")).to_have_count(3)
    expect(section.locator("pre.take")).to_contain_text(f"git merge spawner/{batch_id}/integration")
    assert still_same_document(page)
    shots(page, "merged-desktop")
    page.set_viewport_size({"width": 390, "height": 844})
    shots(page, "merged-phone")

    assert not alerts, alerts
    assert not errors, errors
    context.close()


BEST_OF = """\
name: best-of-3
agent: sh
aggregation: vote
workspace:
  repo: repo
  isolation: worktree
  merge: manual
tasks:
  - {key: terse, prompt: 'printf "def add(a, b):\\n    return a + b\\n" > calc.py'}
  - {key: verbose, prompt: 'printf "def add(a, b):\\n    total = a + b  # the sum\\n    return total\\n" > calc.py'}
  - {key: broken, prompt: 'echo oops > calc.py; exit 1'}
"""


def test_best_of_n_compare_the_candidates_and_pick_one(web, admin_alice, agent_types, workdir, shots, browser):
    from playwright.sync_api import expect

    make_repo(workdir / "repo", {"calc.py": "def add(a, b):\n    pass\n"})
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, web.url)
    page.goto(web.url + "/batches/new/")
    page.click("summary:has-text('Paste or upload')")
    page.fill("#id_spec_text", BEST_OF)
    page.locator("#paste button[value='launch']").click()
    expect(page).to_have_url(re.compile(r"/batches/\d+/$"), timeout=20_000)
    batch_url = page.url
    section = page.locator("#merge-section")
    expect(section.locator("tr[data-state='waiting']")).to_have_count(2, timeout=30_000)

    page.click("#merge-section a:has-text('compare the candidates')")
    expect(page.get_by_role("heading", name="Best of 3: best-of-3")).to_be_visible()
    terse = page.locator(".candidate:has(h2 a:text-is('terse'))")
    verbose = page.locator(".candidate:has(h2 a:text-is('verbose'))")
    broken = page.locator(".candidate:has(h2 a:text-is('broken'))")
    expect(terse.locator(".candidate-diff")).to_contain_text("return a + b")
    expect(verbose.locator(".candidate-diff")).to_contain_text("total = a + b  # the sum")
    expect(verbose.locator(".candidate-diff .c1").first).to_contain_text("# the sum")  # highlighted
    expect(broken).to_contain_text("failed")
    expect(broken.locator("button")).to_have_count(0)
    shots(page, "candidates-desktop")
    page.set_viewport_size({"width": 390, "height": 844})
    shots(page, "candidates-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    terse.locator("button:has-text('Pick terse')").click()
    expect(page.locator("#notice")).to_contain_text("Picked 'terse'")
    page.goto(batch_url)
    expect(section.locator("tr[data-state='merged']")).to_contain_text("terse", timeout=30_000)
    expect(section.locator("tr[data-state='skipped']")).to_contain_text("verbose")
    expect(section.locator(".integration-diff")).to_contain_text("return a + b")
    shots(page, "picked-desktop")
    assert not errors, errors
    context.close()
