"""A run's changes on its page and its batch's: files with +/-, scope marks, the highlighted diff
(escaped, capped when huge), earlier attempts, split view, the streamed download, live updates."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.test import Client
from django.utils import timezone

from dashboard.live.topics import Event, RunTopic
from dashboard.pages import diffs
from spawner.engine import events
from spawner.models import AgentRun, RunAttempt, Workspace
from spawner.states import EventKind
from tests.dashboard.conftest import move

HOSTILE = "<script>alert(1)</script>.py"
DIFF = f"""\
diff --git a/src/app.py b/src/app.py
index 1111111..2222222 100644
--- a/src/app.py
+++ b/src/app.py
@@ -1,3 +1,4 @@
 def main():
-    return "<b>old</b>"
+    return "<script>alert('line')</script>"
+    # a comment
 x = 1
diff --git a/{HOSTILE} b/{HOSTILE}
new file mode 100644
index 0000000..3333333
--- /dev/null
+++ b/{HOSTILE}
@@ -0,0 +1 @@
+print("hi")
diff --git a/logo.png b/logo.png
new file mode 100644
index 0000000..4444444
Binary files /dev/null and b/logo.png differ
"""
CHANGES = {
    "base": "a" * 40,
    "head": "b" * 40,
    "files": [
        {"path": "src/app.py", "added": 2, "removed": 1, "outside_scope": False},
        {"path": HOSTILE, "added": 1, "removed": 0, "outside_scope": True},
        {"path": "logo.png", "added": None, "removed": None, "outside_scope": False},
    ],
    "added": 3,
    "removed": 1,
    "changed": 3,
    "outside_scope": [HOSTILE],
    "truncated": False,
}


def with_workspace(batch, tmp_path, **fields) -> Workspace:
    values = {
        "repo": str(tmp_path / "repo"),
        "checkpoint": "c" * 40,
        "root": str(tmp_path / "ws"),
        "scope_policy": "warn",
        "merge_mode": "none",
        "gate": "pytest -q",
        **fields,
    }
    return Workspace.objects.create(batch=batch, **values)


def with_changes(run, tmp_path, changes=CHANGES, diff: str | bytes = DIFF, number: int | None = None) -> RunAttempt:
    """What the engine leaves after an attempt in a worktree: the summary on attempt and run, the diff file."""
    number = number or run.attempt
    log = tmp_path / f"{run.key}.{number}.log"
    log.write_bytes(b"output\n")
    if diff is not None:
        (tmp_path / f"{run.key}.{number}.diff").write_bytes(diff.encode() if isinstance(diff, str) else diff)
    RunAttempt.objects.filter(run=run, number=number).update(
        log_path=str(log),
        branch=f"spawner/{run.batch_id}/{run.key}",
        base_commit=changes["base"] if changes else "a" * 40,
        head_commit=changes["head"] if changes else "",
        changes=changes,
    )
    AgentRun.objects.filter(id=run.id, attempt=number).update(changes=changes)
    return RunAttempt.objects.get(run=run, number=number)


@pytest.fixture
def coded(member, make_batch, tmp_path):
    """A worktree batch whose `lint` run succeeded with three changed files (one outside its scope)."""
    batch = make_batch(member)
    with_workspace(batch, tmp_path)
    run = batch.runs.get(key="lint")
    move(run, "running")
    move(run, "succeeded")
    with_changes(run, tmp_path)
    return run


def page(client, url) -> str:
    response = client.get(url)
    assert response.status_code == 200, response
    return response.content.decode()


def test_the_run_page_lists_changed_files_with_counts_scope_and_branch(signed_in, coded):
    html = page(signed_in, f"/runs/{coded.id}/")
    assert 'id="diff"' in html and "Changes of attempt 1" in html
    assert f"spawner/{coded.batch_id}/lint" in html
    assert "aaaaaaaaaa" in html and "bbbbbbbbbb" in html and "a" * 11 not in html.split("title=")[0]
    assert '<span class="plus">+3</span> <span class="minus">−1</span> in 3 files' in html
    assert "binary" in html and "Binary file: contents not shown." in html
    assert "1 file changed outside its declared files" in html and "scope policy <strong>warn</strong>" in html
    assert html.count("outside its files</span>") == 2  # in the files table and on the file's diff
    assert "Download .diff" in html


def test_hostile_paths_and_lines_render_as_text(signed_in, coded):
    html = page(signed_in, f"/runs/{coded.id}/")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.py" in html
    assert "<script>alert(" not in html and "alert(&#x27;line&#x27;)" in html
    assert "&lt;b&gt;old&lt;/b&gt;" in html
    assert "<b>old</b>" not in html


def test_the_diff_is_highlighted_per_file_type(signed_in, coded):
    html = page(signed_in, f"/runs/{coded.id}/")
    assert '<span class="k">def</span>' in html  # python keyword
    assert '<span class="c1"># a comment</span>' in html
    assert '<tr class="add">' in html and '<tr class="del">' in html and '<tr class="hunk">' in html


def test_split_view_puts_old_beside_new(signed_in, coded):
    html = page(signed_in, f"/runs/{coded.id}/attempts/1/diff/?view=split")
    assert 'class="diff split"' in html and 'id="diff-pinned"' in html  # live updates leave it alone
    assert '<td class="ln del">2</td>' in html and '<td class="ln add">2</td>' in html
    row = next(r for r in html.split("<tr>") if 'class="ln del">2<' in r)
    assert 'class="ln add">2<' in row  # the removed line faces the line that replaced it
    assert "Live view" in html


def test_no_changes_is_said_plainly(signed_in, member, make_batch, tmp_path):
    batch = make_batch(member)
    with_workspace(batch, tmp_path)
    run = move(move(batch.runs.get(key="lint"), "running"), "succeeded")
    empty = {**CHANGES, "files": [], "added": 0, "removed": 0, "changed": 0, "outside_scope": []}
    with_changes(run, tmp_path, changes=empty, diff="")
    html = page(signed_in, f"/runs/{run.id}/")
    assert "No changes." in html and "The agent succeeded without changing any file." in html
    batch_html = page(signed_in, f"/batches/{batch.id}/")
    assert "no changes" in batch_html


def test_before_the_agent_ends_the_page_says_changes_will_come(signed_in, member, make_batch, tmp_path):
    batch = make_batch(member)
    with_workspace(batch, tmp_path)
    run = move(batch.runs.get(key="lint"), "running")
    html = page(signed_in, f"/runs/{run.id}/")
    assert "Its changes appear here when the agent ends." in html


def test_a_run_without_a_workspace_has_no_changes_section(signed_in, member, make_batch):
    run = move(make_batch(member).runs.get(key="lint"), "running")
    html = page(signed_in, f"/runs/{run.id}/")
    assert 'id="diff"' not in html
    assert "no-diffs" in page(signed_in, f"/batches/{run.batch_id}/")


def test_a_huge_diff_is_capped_with_a_link_to_the_whole_file(signed_in, member, make_batch, tmp_path, monkeypatch):
    batch = make_batch(member)
    with_workspace(batch, tmp_path)
    run = move(move(batch.runs.get(key="lint"), "running"), "succeeded")
    body = "".join(f"+line {i} of a very long file\n" for i in range(60_000))
    huge = "diff --git a/big.txt b/big.txt\n--- a/big.txt\n+++ b/big.txt\n@@ -0,0 +1,60000 @@\n" + body
    files = [{"path": "big.txt", "added": 60000, "removed": 0, "outside_scope": False}]
    with_changes(run, tmp_path, changes={**CHANGES, "files": files, "changed": 1, "outside_scope": []}, diff=huge)
    started = time.monotonic()
    html = page(signed_in, f"/runs/{run.id}/")
    assert time.monotonic() - started < 5
    assert "The diff is large" in html and f"/runs/{run.id}/attempts/1/diff/download/" in html
    assert "line 100 of" in html and "line 59999 of" not in html
    assert html.count('<tr class="add">') <= diffs.SHOW_LINES


def test_the_download_streams_the_whole_diff_masked(signed_in, member, make_batch, tmp_path, monkeypatch):
    monkeypatch.setenv("DIFF_TOKEN", "s3cr3t-value-123")
    batch = make_batch(member)
    with_workspace(batch, tmp_path)
    run = move(move(batch.runs.get(key="lint"), "running"), "succeeded")
    run.agent_type.secret_names = ["DIFF_TOKEN"]
    run.agent_type.save()
    body = DIFF + "".join(f"+filler {i}\n" for i in range(20_000)) + "+token=s3cr3t-value-123\n"
    with_changes(run, tmp_path, diff=body)
    response = signed_in.get(f"/runs/{run.id}/attempts/1/diff/download/")
    assert response.status_code == 200 and response.streaming
    assert "attachment" in response["Content-Disposition"] and ".diff" in response["Content-Disposition"]

    async def collect():
        return b"".join([chunk async for chunk in response.streaming_content])

    data = asyncio.run(collect())
    assert data.startswith(b"diff --git") and b"+filler 19999" in data
    assert b"s3cr3t-value-123" not in data and b"token=***" in data
    # Shown on the page masked too.
    assert "s3cr3t-value-123" not in page(signed_in, f"/runs/{run.id}/")


def test_the_download_needs_a_sign_in_and_an_existing_diff(client, signed_in, coded, tmp_path):
    url = f"/runs/{coded.id}/attempts/1/diff/download/"
    response = Client().get(url)
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert Client().get(f"/runs/{coded.id}/attempts/1/diff/").status_code == 302
    (tmp_path / "lint.1.diff").unlink()
    assert signed_in.get(url).status_code == 404
    assert "The diff file is not on this server." in page(signed_in, f"/runs/{coded.id}/")


def test_earlier_attempts_diffs_stay_reachable(signed_in, coded, tmp_path):
    # A second attempt that changed something else.
    RunAttempt.objects.create(run=coded, number=2, status="succeeded", not_before=timezone.now())
    AgentRun.objects.filter(id=coded.id).update(attempt=2)
    second = {**CHANGES, "files": [{"path": "b.txt", "added": 1, "removed": 0, "outside_scope": False}]}
    second.update(added=1, removed=0, changed=1, outside_scope=[])
    with_changes(coded, tmp_path, changes=second, number=2, diff="diff --git a/b.txt b/b.txt\n@@ -0,0 +1 @@\n+b\n")
    html = page(signed_in, f"/runs/{coded.id}/")
    assert "Changes of attempt 2" in html and "b.txt" in html and "src/app.py" not in html
    assert f"/runs/{coded.id}/attempts/1/diff/" in html
    first = page(signed_in, f"/runs/{coded.id}/?attempt=1")
    assert "Changes of attempt 1" in first and "src/app.py" in first and 'id="diff-pinned"' in first
    assert "Changes of attempt 1" in page(signed_in, f"/runs/{coded.id}/attempts/1/diff/")


def test_the_batch_page_shows_each_runs_diff_size_scope_and_the_workspace(signed_in, coded):
    html = page(signed_in, f"/batches/{coded.batch_id}/")
    row = html.split(f'id="run-{coded.id}"')[1].split("</tr>")[0]
    assert '<span class="plus">+3</span> <span class="minus">−1</span>' in row and "3 files" in row
    assert "1 outside its files" in row
    build = AgentRun.objects.get(batch_id=coded.batch_id, key="build")
    other = html.split(f'id="run-{build.id}"')[1].split("</tr>")[0]
    assert '<td class="diff-col num"><span class="muted">–</span></td>' in other
    assert 'id="workspace"' in html and "cccccccccc" in html and "pytest -q" in html
    assert "Warn" in html and "Worktree" in html


def test_a_run_changes_event_brings_the_diff_to_the_run_page_live(member, make_batch, tmp_path):
    batch = make_batch(member)
    with_workspace(batch, tmp_path)
    run = move(batch.runs.get(key="lint"), "running")
    topic = RunTopic(run)
    assert "Its changes appear here" in "".join(topic.snapshot())
    with_changes(run, tmp_path)
    event = events.record(batch_id=batch.id, run_id=run.id, attempt=1, kind=EventKind.RUN_CHANGES, data={})
    topic.collect(Event(event.id, batch.id, run.id, EventKind.RUN_CHANGES))
    html = "".join(topic.update())
    assert 'id="diff"' in html and "src/app.py" in html and "&lt;script&gt;" in html
    # An output event alone does not re-render the diff.
    topic.collect(Event(event.id + 1, batch.id, run.id, EventKind.RUN_OUTPUT))
    assert 'id="diff"' not in "".join(topic.update())
