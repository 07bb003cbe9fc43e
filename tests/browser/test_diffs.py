"""A coding batch in git worktrees, watched in a real Chromium: the run's diff appears live when its
agent ends (highlighted, a hostile file name shown as text, a scope violation marked), the split
view, the batch page's diff sizes and workspace; at desktop and phone widths."""

from __future__ import annotations

import pytest

from tests.browser.conftest import expect_no_reload, sign_in, still_same_document
from tests.spawner.test_workspaces import make_repo

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HOSTILE = "<img src=x onerror=window.__pwned=1>.js"
# The agent waits (bounded) until the test has the run page open, then edits: Python in its scope,
# a file with HTML in its name, a binary file, and README.md outside its declared files.
EDIT = (
    "for i in $(seq 1 300); do test -f {go} && break; sleep 0.1; done; "
    "printf 'def greet(name):\\n    return \"<script>window.__pwned=2</script>\" + name\\n' > src/app.py; "
    "printf '\\nVALUE = 42\\n' >> src/app.py; "
    "printf 'let x = \"<b>bold</b>\";\\n' > 'src/{hostile}'; "
    "printf '\\211PNG\\r\\n\\032\\n\\000\\000' > src/logo.png; "
    "echo 'edited outside' >> README.md"
)


@pytest.fixture
def coding_batch(cluster, alice, agent_types, tmp_path):
    """Launched before the browser starts (the ORM refuses to run beside Playwright's loop)."""
    from tests.spawner.helpers import launch

    repo = make_repo(tmp_path / "repo", {"README.md": "hello\n", "src/app.py": "def greet(name):\n    return name\n"})
    go = tmp_path / "go"
    text = (
        "name: coding\nagent: sh\nmax_parallel: 2\n"
        f"workspace:\n  repo: {repo}\n  isolation: worktree\n  merge: none\n  scope: warn\n"
        "  setup: 'git log --oneline -1'\n  gate: 'test -f src/app.py'\n"
        "tasks:\n"
        f"  - key: edit\n    files: [src/]\n    prompt: |\n      {EDIT.format(go=go, hostile=HOSTILE)}\n"
        "  - {key: noop, prompt: 'echo nothing to do'}\n"
    )
    batch = launch(text, tmp_path, owner=alice)
    runs = {r.key: r.id for r in batch.runs.all()}
    return {"batch": batch.id, "runs": runs, "go": go}


def test_the_diff_appears_live_and_reads_well(web, coding_batch, shots, browser):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in(page, web.url)

    run_url = f"{web.url}/runs/{coding_batch['runs']['edit']}/"
    page.goto(run_url)
    expect(page.locator("body[data-live='on']")).to_have_count(1, timeout=10_000)
    section = page.locator("#diff")
    expect(section).to_contain_text("Its changes appear here when the agent ends", timeout=20_000)
    expect_no_reload(page)
    shots(page, "run-waiting")
    coding_batch["go"].touch()

    # The changes arrive without a reload: files, counts, scope mark, branch, gate, highlighted lines.
    expect(section.locator("table.files")).to_be_visible(timeout=30_000)
    expect(page.locator("#run-header .badge")).to_have_text("Succeeded", timeout=30_000)
    expect(section.locator(".git-meta .badge")).to_have_text("passed", timeout=10_000)
    assert still_same_document(page)
    files = section.locator("table.files")
    expect(files).to_contain_text("src/app.py")
    expect(files).to_contain_text(f"src/{HOSTILE}")  # the name as text, not an element
    expect(files.locator("tr:has-text('logo.png')")).to_contain_text("binary")
    expect(files.locator("tr.outside")).to_contain_text("README.md")
    expect(section.locator(".scope-warning")).to_contain_text("scope policy warn")
    expect(section.locator(".git-meta")).to_contain_text(f"spawner/{coding_batch['batch']}/edit")
    expect(section.locator("table.diff .k").first).to_have_text("def")
    expect(section).to_contain_text("<script>window.__pwned=2</script>")
    assert page.evaluate("window.__pwned") is None, "a file name or a line ran as HTML"
    assert page.locator("#diff img").count() == 0
    shots(page, "run-diff")

    # Split view, then back to the live view.
    section.locator("a:text-is('Split')").click()
    split = page.locator("#diff-pinned table.diff.split").first
    expect(split).to_be_visible()
    shots(page, "run-split")
    page.locator("#diff-pinned a:text-is('Live view')").click()
    expect(page.locator("#diff table.diff.unified").first).to_be_visible()

    # The batch page: diff sizes, scope marks, the workspace.
    page.goto(f"{web.url}/batches/{coding_batch['batch']}/")
    expect(page.locator("#batch-header .badge.big")).to_have_text("Succeeded", timeout=30_000)
    row = page.locator(f"#run-{coding_batch['runs']['edit']}")
    expect(row.locator(".diff-col")).to_contain_text("4 files")
    expect(row.locator(".tag.scope")).to_contain_text("1 outside its files")
    expect(page.locator(f"#run-{coding_batch['runs']['noop']} .diff-col")).to_contain_text("no changes")
    expect(page.locator("#workspace")).to_contain_text("Worktree")
    shots(page, "batch")

    # Phone width.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, storage_state=context.storage_state())
    small = phone.new_page()
    small.goto(run_url)
    expect(small.locator("#diff table.files")).to_be_visible()
    shots(small, "phone-run")
    small.goto(f"{web.url}/batches/{coding_batch['batch']}/")
    expect(small.locator("#workspace")).to_be_visible()
    shots(small, "phone-batch")
    small.goto(f"{web.url}/runs/{coding_batch['runs']['noop']}/")
    expect(small.locator("#diff")).to_contain_text("No changes.")
    shots(small, "phone-noop")

    assert errors == []
