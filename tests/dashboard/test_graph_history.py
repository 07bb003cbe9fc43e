"""The dependency graph (batch page, plan preview, live), the timeline's details, the history page."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from dashboard.live.topics import BatchTopic
from spawner.models import AgentRun, Batch, RunAttempt
from tests.dashboard.conftest import finish, move

CHAIN = """\
name: chain
agent: sh
tasks:
  - {key: fetch, prompt: "echo a"}
  - {key: parse, prompt: "echo b", depends_on: [fetch]}
  - {key: lint, prompt: "echo c", depends_on: [fetch]}
  - {key: report, prompt: "echo d", depends_on: [parse, lint]}
"""


def nodes(html: str) -> dict[str, str]:
    """key -> state, read from the drawn SVG nodes' tooltips."""
    return dict(re.findall(r"<title>([^<:]+): ([a-z ]+) \(wave \d+\)</title>", html))


def test_the_batch_page_draws_the_graph_with_states_in_words_and_glyphs(signed_in, member, make_batch):
    batch = make_batch(member, CHAIN)
    move(batch.runs.get(key="fetch"), "succeeded")
    move(batch.runs.get(key="parse"), "failed")
    html = signed_in.get(f"/batches/{batch.id}/").content.decode()
    graph = html[html.index(f'id="graph-{batch.id}"') :]
    graph = graph[: graph.index("</svg>")]
    assert nodes(graph) == {"fetch": "succeeded", "parse": "failed", "lint": "pending", "report": "pending"}
    assert '<text x="8" y="34" class="st">failed</text>' in graph and ">✗</tspan> parse<" in graph
    assert ">✓</tspan> fetch<" in graph and ">○</tspan> report<" in graph
    assert graph.count("<path d=") == 4  # fetch→parse, fetch→lint, parse→report, lint→report
    assert graph.count('class="open"') == 2  # out of parse and lint: not met yet
    run = batch.runs.get(key="parse")
    assert f'href="/runs/{run.id}/"' in graph
    assert "wave 1" in graph and "wave 3" in graph
    assert "History of “chain”" in html and "/batches/history/?name=chain" in html


def test_the_plan_preview_draws_the_graph_before_launch(signed_in, agent_types):
    response = signed_in.post("/batches/new/", {"source": "yaml", "action": "plan", "spec_text": CHAIN})
    html = response.content.decode()
    assert 'id="graph-plan"' in html
    graph = html[html.index('id="graph-plan"') :]
    assert nodes(graph) == dict.fromkeys(["fetch", "parse", "lint", "report"], "planned")
    assert "<a href=" not in graph[: graph.index("</svg>")]  # nothing to link to yet


def test_hostile_keys_and_names_are_escaped_in_the_svg_the_timeline_and_the_history(signed_in, member, make_batch):
    batch = make_batch(member, CHAIN)
    hostile = '<script>alert("x")</script>&amp;\u202e\U0001f600'
    AgentRun.objects.filter(batch=batch, key="parse").update(key=hostile)
    AgentRun.objects.filter(batch=batch, key="report").update(depends_on=[hostile, "lint"])
    Batch.objects.filter(id=batch.id).update(name='<img src=x onerror="alert(1)">')
    move(batch.runs.get(key=hostile), "failed")
    html = signed_in.get(f"/batches/{batch.id}/").content.decode()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;amp;" in html  # the key, in the graph's title
    assert "\U0001f600" in html
    graph = html[html.index(f'id="graph-{batch.id}"') :]
    assert graph[: graph.index("</svg>")].count("<path d=") == 4  # the edge to the renamed key is drawn
    history = signed_in.get("/batches/history/", {"name": '<img src=x onerror="alert(1)">'}).content.decode()
    assert "<img src=x" not in history and "&lt;script&gt;" in history


@pytest.fixture
def big_batch(member, agent_types):
    """1,000 runs: 5 waves of 200, each run after the one before it in its chain."""
    now = timezone.now()
    batch = Batch.objects.create(name="big", owner=member, spec={}, max_parallel=16, launched_at=now)
    states = ["succeeded"] * 6 + ["failed", "running", "queued", "pending"]
    AgentRun.objects.bulk_create(
        AgentRun(
            batch=batch,
            key=f"task-{i:04d}",
            agent_type=agent_types["sh"],
            timeout=60,
            order=i,
            wave=i % 5,
            depends_on=[f"task-{i - 1:04d}"] if i % 5 else [],
            status=states[i % 10],
            attempt=1,
        )
        for i in range(1000)
    )
    RunAttempt.objects.bulk_create(
        RunAttempt(run=run, number=1, not_before=now, status="succeeded", started_at=now, finished_at=now)
        for run in batch.runs.all()
    )
    return batch


def test_a_thousand_run_batch_draws_a_bounded_graph(signed_in, big_batch):
    html = signed_in.get(f"/batches/{big_batch.id}/").content.decode()
    graph = html[html.index(f'id="graph-{big_batch.id}"') :]
    svg = graph[: graph.index("</svg>")]
    drawn = svg.count('<g class="node ')
    assert 5 <= drawn <= 260
    assert "1000 tasks in 5 waves" in graph and "folded into summary nodes" in graph
    more = re.findall(r"\+(\d+) more", svg)
    assert len(more) == 5  # one summary node per wave
    assert drawn - len(more) + sum(map(int, more)) == 1000  # every task drawn or counted
    assert "+0 more" not in svg


def test_the_live_update_carries_the_graph_with_new_states(member, make_batch):
    batch = make_batch(member, CHAIN)
    topic = BatchTopic(batch.id)
    first = "".join(topic.snapshot())
    assert f'id="graph-{batch.id}"' in first and nodes(first)["fetch"] == "queued"
    move(batch.runs.get(key="fetch"), "running")
    topic.timeline_pending = topic.pending = True
    update = "".join(topic.take(now=1e9))
    assert nodes(update[update.index(f'id="graph-{batch.id}"') :])["fetch"] == "running"


def test_timeline_bars_say_attempt_start_duration_exit_code_and_status_by_glyph(signed_in, member, make_batch):
    batch = make_batch(member, CHAIN)
    run = move(batch.runs.get(key="fetch"), "failed")
    RunAttempt.objects.filter(run=run).update(started_at=batch.launched_at + timedelta(seconds=2))
    html = signed_in.get(f"/batches/{batch.id}/").content.decode()
    timeline = html[html.index(f'id="timeline-{batch.id}"') :]
    bar = re.search(r'<span class="bar failed"[^>]*title="([^"]*)"', timeline)
    assert bar, timeline[:2000]
    assert "fetch · attempt 1: failed" in bar.group(1) and "exit code 1" in bar.group(1) and "(+2.0 s)" in bar.group(1)
    assert '<span class="g">✗</span>' in timeline[bar.end() : bar.end() + 200]
    assert 'data-zoom="in"' in timeline and "timeline.js" in html and "data-edges" in timeline
    for words in ("succeeded", "failed", "timed out", "cancelled", "rate limited"):
        assert f"</span></span> {words}</span>" in timeline
    # The lane of a dependent names its dependencies' lanes, for the edges toggle.
    lanes = re.findall(
        r'<div class="lane" data-after="([^"]*)"><a class="lane-key" href="[^"]*" title="([^:"]+):', timeline
    )
    position = {key: n for n, (_, key) in enumerate(lanes)}
    after = {key: {int(i) for i in deps.split()} for deps, key in lanes}
    assert after["report"] == {position["parse"], position["lint"]} and after["fetch"] == set()


def test_history_shows_each_batch_of_a_name_with_a_flaky_task(signed_in, member, make_batch):
    first = make_batch(member, CHAIN)
    for key in ("fetch", "parse", "lint", "report"):
        move(first.runs.get(key=key), "succeeded")
    finish(first)
    second = make_batch(member, CHAIN)
    move(second.runs.get(key="fetch"), "succeeded")
    move(second.runs.get(key="parse"), "failed")
    make_batch(member, CHAIN.replace("name: chain", "name: other"))
    html = signed_in.get("/batches/history/", {"name": "chain"}).content.decode()
    assert html.index(f"#{second.id}<") < html.index(f"#{first.id}<")  # newest first
    assert f"#{first.id + 2}<" not in html  # another name
    assert "1 task changed state between these batches" in html
    assert re.search(r'class="task flaky"[^>]*>.*?parse</th>', html)
    assert not re.search(r'class="task flaky"[^>]*>[^<]*fetch</th>', html)
    parse_second = second.runs.get(key="parse")
    assert re.search(
        rf'<td class="cell s-failed"><a href="/runs/{parse_second.id}/"[^>]*><span class="g">✗</span> failed', html
    )
    parse_first = first.runs.get(key="parse")
    assert f'href="/runs/{parse_first.id}/"' in html


def test_history_marks_a_task_that_needed_a_second_attempt(signed_in, member, make_batch):
    batch = make_batch(member, CHAIN)
    for key in ("fetch", "parse", "lint", "report"):
        move(batch.runs.get(key=key), "succeeded")
    AgentRun.objects.filter(batch=batch, key="lint").update(attempt=2)  # failed once, then a retry succeeded
    html = signed_in.get("/batches/history/", {"name": "chain"}).content.decode()
    assert re.search(r'class="task flaky"[^>]*>.*?lint</th>', html)
    assert not re.search(r'class="task flaky"[^>]*>[^<]*fetch</th>', html)
    assert "2 tries" in html and "ended the same way" not in html


def test_history_pages_through_fifty_batches_at_a_time(signed_in, member, agent_types):
    now = timezone.now()
    Batch.objects.bulk_create(Batch(name="nightly", spec={}, launched_at=now) for _ in range(51))
    page1 = signed_in.get("/batches/history/", {"name": "nightly"}).content.decode()
    assert page1.count('<th class="batch"><a href=') == 50 and "older →" in page1 and "page 1 of 2" in page1
    page2 = signed_in.get("/batches/history/", {"name": "nightly", "page": "2"}).content.decode()
    assert page2.count('<th class="batch"><a href=') == 1 and "← newer" in page2
    assert signed_in.get("/batches/history/", {"name": "nightly", "page": "junk"}).status_code == 200
    empty = signed_in.get("/batches/history/").content.decode()
    assert "Name a batch to see its history" in empty
    assert "No batch is named “none such”" in signed_in.get("/batches/history/", {"name": "none such"}).content.decode()


def test_history_needs_a_sign_in(client, db):
    response = client.get("/batches/history/", {"name": "chain"})
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_a_big_batch_page_fetches_its_timeline_when_scrolled_to(signed_in, big_batch):
    html = signed_in.get(f"/batches/{big_batch.id}/").content.decode()
    timeline = html[html.index(f'id="timeline-{big_batch.id}"') :]
    assert f'hx-get="/batches/{big_batch.id}/timeline/" hx-trigger="revealed"' in timeline
    assert '<div class="lane"' not in html
    fragment = signed_in.get(f"/batches/{big_batch.id}/timeline/").content.decode()
    assert fragment.count('<div class="lane"') == 1000 and 'hx-trigger="revealed"' not in fragment
    # The first live update brings the whole timeline too.
    snapshot = "".join(BatchTopic(big_batch.id).snapshot())
    assert snapshot.count('<div class="lane"') == 1000


def test_a_long_chain_folds_the_waves_far_from_the_work(signed_in, member, agent_types):
    now = timezone.now()
    batch = Batch.objects.create(name="chain", owner=member, spec={}, launched_at=now)
    AgentRun.objects.bulk_create(
        AgentRun(
            batch=batch,
            key=f"step-{i}",
            agent_type=agent_types["sh"],
            timeout=60,
            order=i,
            wave=i,
            depends_on=[f"step-{i - 1}"] if i else [],
            status="succeeded" if i < 100 else "running" if i == 100 else "pending",
        )
        for i in range(300)
    )
    html = signed_in.get(f"/batches/{batch.id}/").content.decode()
    svg = html[html.index(f'id="graph-{batch.id}"') :]
    svg = svg[: svg.index("</svg>")]
    assert "<title>step-100: running (wave 101)</title>" in svg
    assert re.search(r"<title>\d+ tasks not drawn one by one \(waves 1–\d+\): \d+ succeeded</title>", svg)
    assert re.search(r"<title>\d+ tasks not drawn one by one \(waves \d+–300\): \d+ pending</title>", svg)
    assert svg.count('<g class="node ') <= 16
