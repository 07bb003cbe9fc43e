"""The batches list, a batch page, its actions and the comparison page."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from spawner.models import Batch, RunEvent
from tests.dashboard.conftest import finish, grant, move


def test_the_list_shows_status_progress_and_owner(signed_in, member, make_batch):
    batch = make_batch(member)
    move(batch.runs.get(key="build"), "running")
    move(batch.runs.get(key="build"), "succeeded")
    html = signed_in.get("/").content.decode()
    assert f'id="batch-{batch.id}"' in html
    assert "1/3" in html
    assert "mia" in html
    assert 'class="seg succeeded"' in html


def test_the_list_filters_by_status_and_owner(signed_in, member, make_batch):
    other = User.objects.create_user("otto")
    mine, theirs = make_batch(member), make_batch(other)
    finish(theirs, "failed")
    html = signed_in.get("/?status=failed").content.decode()
    assert f'id="batch-{theirs.id}"' in html and f'id="batch-{mine.id}"' not in html
    html = signed_in.get(f"/?owner={member.id}").content.decode()
    assert f'id="batch-{mine.id}"' in html and f'id="batch-{theirs.id}"' not in html
    cli = make_batch(None)
    html = signed_in.get("/?owner=cli").content.decode()
    assert f'id="batch-{cli.id}"' in html and f'id="batch-{mine.id}"' not in html


def test_the_list_is_paginated(signed_in, member, make_batch, settings):
    settings.DASHBOARD = {**settings.DASHBOARD, "PAGE_SIZE": 2}
    batches = [make_batch(member) for _ in range(3)]
    html = signed_in.get("/").content.decode()
    assert "Page 1 of 2" in html and f'id="batch-{batches[0].id}"' not in html
    html = signed_in.get("/?page=2").content.decode()
    assert f'id="batch-{batches[0].id}"' in html


def test_the_list_connects_its_websocket_with_its_filters(signed_in, member, make_batch):
    html = signed_in.get("/?status=running&page=1").content.decode()
    assert 'ws-connect="/ws/batches/?status=running"' in html


def test_the_batch_page_shows_header_runs_and_timeline(signed_in, member, make_batch):
    batch = make_batch(member)
    build = move(batch.runs.get(key="build"), "running", output="compiling <everything>\n")
    html = signed_in.get(f"/batches/{batch.id}/").content.decode()
    assert 'id="batch-header"' in html and f'ws-connect="/ws/batches/{batch.id}/"' in html
    assert f'id="run-{build.id}"' in html
    assert "compiling &lt;everything&gt;" in html
    assert f'id="timeline-{batch.id}"' in html and 'class="bar running"' in html
    assert "Cancel batch" in html


def test_an_unknown_batch_is_not_found(signed_in, db):
    assert signed_in.get("/batches/999/").status_code == 404


def test_the_json_summary(signed_in, member, make_batch):
    batch = make_batch(member)
    data = signed_in.get(f"/batches/{batch.id}.json").json()
    assert data["batch"] == batch.id and len(data["runs"]) == 3


def test_the_owner_cancels_a_batch_and_is_recorded(signed_in, member, make_batch):
    batch = make_batch(member)
    response = signed_in.post(f"/batches/{batch.id}/cancel/", headers={"HX-Request": "true"})
    assert response.status_code == 200 and "Cancelling" in response.content.decode()
    assert RunEvent.objects.get(kind="batch.cancel_requested").actor == member


def test_someone_else_may_not_cancel_a_batch(client, viewer, member, make_batch):
    batch = make_batch(member)
    client.force_login(viewer)
    response = client.post(f"/batches/{batch.id}/cancel/", headers={"HX-Request": "true"})
    assert response.status_code == 403
    assert not RunEvent.objects.filter(kind="batch.cancel_requested").exists()


def test_the_cancel_permission_allows_cancelling_any_batch(client, viewer, member, make_batch):
    batch = make_batch(member)
    client.force_login(grant(viewer, "cancel_batch"))
    assert client.post(f"/batches/{batch.id}/cancel/").status_code == 302
    assert RunEvent.objects.get(kind="batch.cancel_requested").actor == viewer


def test_cancelling_an_ended_batch_is_refused_with_the_reason(signed_in, member, make_batch):
    batch = finish(make_batch(member))
    response = signed_in.post(f"/batches/{batch.id}/cancel/", headers={"HX-Request": "true"})
    assert response.status_code == 409 and "is not running" in response.content.decode()
    response = signed_in.post(f"/batches/{batch.id}/cancel/", follow=True)
    assert "is not running" in response.content.decode()


def test_retry_failed_runs_retries_each_failed_run(signed_in, member, make_batch):
    batch = make_batch(member)
    lint = move(batch.runs.get(key="lint"), "running")
    move(lint, "failed", error="exit code 1")
    response = signed_in.post(f"/batches/{batch.id}/retry-failed/", headers={"HX-Request": "true"})
    assert response.status_code == 200 and "lint" in response.content.decode()
    lint.refresh_from_db()
    assert (lint.status, lint.attempt) == ("queued", 2)
    assert RunEvent.objects.get(kind="run.retried").actor == member


def test_retry_failed_without_failures_is_refused(signed_in, member, make_batch):
    batch = make_batch(member)
    assert signed_in.post(f"/batches/{batch.id}/retry-failed/", headers={"HX-Request": "true"}).status_code == 409


def test_retry_and_rerun_need_the_launch_permission(client, viewer, member, make_batch):
    batch = make_batch(member)
    client.force_login(viewer)
    assert client.post(f"/batches/{batch.id}/retry-failed/").status_code == 403
    assert client.post(f"/batches/{batch.id}/rerun-sequential/").status_code == 403


def test_rerun_sequentially_launches_a_copy_and_opens_the_comparison(signed_in, member, make_batch):
    batch = finish(make_batch(member))
    response = signed_in.post(f"/batches/{batch.id}/rerun-sequential/", headers={"HX-Request": "true"})
    rerun = Batch.objects.get(sequential_of=batch)
    assert response.headers["HX-Redirect"] == f"/batches/{rerun.id}/compare/"
    assert (rerun.mode, rerun.owner) == ("sequential", member)
    html = signed_in.get(f"/batches/{rerun.id}/compare/").content.decode()
    assert f"#{batch.id}" in html and f"#{rerun.id}" in html
    assert f'id="timeline-{batch.id}"' in html and f'id="timeline-{rerun.id}"' in html


def test_a_member_may_not_rerun_an_admin_only_agent_type(signed_in, member, make_batch):
    text = "name: shelly\nagent: shell\ntasks:\n  - {key: a, prompt: echo a}\n"
    batch = finish(make_batch(None, text=text))
    response = signed_in.post(f"/batches/{batch.id}/rerun-sequential/", headers={"HX-Request": "true"})
    assert response.status_code == 403 and "only an admin" in response.content.decode().lower()


def test_the_comparison_puts_both_timelines_on_one_axis(signed_in, member, make_batch):
    from dashboard.pages import queries

    parallel = finish(make_batch(member), wall=2.0)
    sequential = make_batch(member)
    Batch.objects.filter(id=sequential.id).update(sequential_of=parallel, mode="sequential")
    sequential = finish(Batch.objects.get(id=sequential.id), wall=6.0)
    context = queries.compare_context(parallel, sequential)
    axes = {c["timeline"].axis_seconds for c in context["columns"]}
    assert len(axes) == 1
    assert context["measured_speedup"] == pytest.approx(3.0)
    html = signed_in.get(f"/batches/{parallel.id}/compare/").content.decode()
    assert "3.00×" in html and "faster" in html


def test_the_comparison_shows_cost_beside_time(signed_in, member, make_batch):
    from spawner.models import AgentRun

    parallel = finish(make_batch(member), wall=2.0)
    sequential = make_batch(member)
    Batch.objects.filter(id=sequential.id).update(sequential_of=parallel, mode="sequential")
    sequential = finish(Batch.objects.get(id=sequential.id), wall=6.0)
    usage = {"input_tokens": 100, "output_tokens": 20, "cost_usd": 0.25, "source": "cli"}
    for batch in (parallel, sequential):
        first, *rest = AgentRun.objects.filter(batch=batch)
        AgentRun.objects.filter(id=first.id).update(usage=usage, cost_usd=0.25)
        AgentRun.objects.filter(id__in=[r.id for r in rest]).update(usage={**usage, "cost_usd": None}, cost_usd=None)
    html = signed_in.get(f"/batches/{parallel.id}/compare/").content.decode()
    row = html.split("<th>Cost</th>", 1)[1].split("</tr>", 1)[0]
    assert row.count("$0.25") == 2 and "unknown" in row
    assert "<th>Tokens</th>" in html


def test_compare_without_a_rerun_offers_one(signed_in, member, make_batch):
    batch = finish(make_batch(member))
    html = signed_in.get(f"/batches/{batch.id}/compare/").content.decode()
    assert "has not been re-run sequentially yet" in html
