"""A run's page: status, attempts, output (escaped, coloured), earlier output and the whole log."""

from __future__ import annotations

from spawner.models import RunAttempt, RunEvent
from tests.dashboard.conftest import move


def with_log(run, tmp_path, content: bytes):
    path = tmp_path / f"{run.key}.{run.attempt}.log"
    path.write_bytes(content)
    RunAttempt.objects.filter(run=run, number=run.attempt).update(log_path=str(path))
    return path


def test_the_run_page_shows_status_attempts_and_output(signed_in, member, make_batch):
    run = make_batch(member).runs.get(key="lint")
    move(run, "running", output="\x1b[32mok\x1b[0m <b>bold?</b>\n")
    html = signed_in.get(f"/runs/{run.id}/").content.decode()
    assert f'ws-connect="/ws/runs/{run.id}/"' in html
    assert '<span class="ansi-green">ok</span> &lt;b&gt;bold?&lt;/b&gt;' in html
    assert 'id="attempts"' in html and "Running" in html
    assert "Cancel" in html


def test_a_failed_run_offers_retry_and_shows_its_error(signed_in, member, make_batch):
    run = make_batch(member).runs.get(key="lint")
    move(run, "running")
    move(run, "failed", error="exit code 3")
    html = signed_in.get(f"/runs/{run.id}/").content.decode()
    assert "exit code 3" in html and ">Retry<" in html


def test_retry_queues_a_new_attempt_by_this_user(signed_in, member, make_batch):
    run = make_batch(member).runs.get(key="lint")
    move(run, "running")
    move(run, "failed")
    response = signed_in.post(f"/runs/{run.id}/retry/", headers={"HX-Request": "true"})
    assert response.status_code == 200 and "attempt 2" in response.content.decode()
    assert RunEvent.objects.get(kind="run.retried").actor == member


def test_retrying_a_running_run_is_refused(signed_in, member, make_batch):
    run = make_batch(member).runs.get(key="lint")
    move(run, "running")
    response = signed_in.post(f"/runs/{run.id}/retry/", headers={"HX-Request": "true"})
    assert response.status_code == 409 and "only ended, unsuccessful runs retry" in response.content.decode()


def test_cancel_a_run(signed_in, member, make_batch):
    run = make_batch(member).runs.get(key="lint")
    response = signed_in.post(f"/runs/{run.id}/cancel/", headers={"HX-Request": "true"})
    assert response.status_code == 200
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert RunEvent.objects.get(kind="run.cancelled").actor == member


def test_a_viewer_may_neither_retry_nor_cancel(client, viewer, member, make_batch):
    run = make_batch(member).runs.get(key="lint")
    client.force_login(viewer)
    assert client.post(f"/runs/{run.id}/cancel/").status_code == 403
    assert client.post(f"/runs/{run.id}/retry/").status_code == 403


def test_earlier_output_loads_in_pieces_before_the_tail(signed_in, member, make_batch, tmp_path, settings):
    settings.SPAWNER = {**settings.SPAWNER, "TAIL_BYTES": 100}
    settings.DASHBOARD = {**settings.DASHBOARD, "LOG_CHUNK_BYTES": 200}
    run = make_batch(member).runs.get(key="lint")
    with_log(run, tmp_path, b"".join(b"line %03d\n" % i for i in range(50)))  # 450 bytes
    html = signed_in.get(f"/runs/{run.id}/").content.decode()
    assert "Download full log" in html and 'id="L1"' in html  # a short log is shown whole, numbered
    first = signed_in.get(f"/runs/{run.id}/attempts/1/log/", headers={"HX-Request": "true"}).content.decode()
    assert "line 017" in first and "line 016" not in first  # from the first line start after byte 150
    assert "line 037" in first and "line 039" not in first  # up to where the tail begins, byte 350
    assert "?before=153" in first
    second = signed_in.get(f"/runs/{run.id}/attempts/1/log/?before=153").content.decode()
    assert "line 000" in second and "Start of the log" in second


def test_the_whole_log_downloads(signed_in, member, make_batch, tmp_path):
    run = make_batch(member).runs.get(key="lint")
    with_log(run, tmp_path, b"all of it\n\xff\xfe binary too\n")
    response = signed_in.get(f"/runs/{run.id}/attempts/1/log/download/")
    assert response.status_code == 200
    assert b"".join(response) == b"all of it\n\xff\xfe binary too\n"
    assert "attachment" in response["Content-Disposition"]
    assert response["Content-Length"] == "24"


def test_a_log_still_growing_downloads_as_it_was_when_asked_for(signed_in, member, make_batch, tmp_path):
    run = make_batch(member).runs.get(key="lint")
    path = with_log(run, tmp_path, b"first line\n")
    response = signed_in.get(f"/runs/{run.id}/attempts/1/log/download/")
    with open(path, "ab") as f:
        f.write(b"written by the agent meanwhile\n")
    assert b"".join(response) == b"first line\n"
    assert response["Content-Length"] == "11"


def test_a_log_that_is_not_on_this_server_is_not_found(signed_in, member, make_batch):
    run = make_batch(member).runs.get(key="lint")
    RunAttempt.objects.filter(run=run).update(log_path="/nowhere/x.log")
    assert signed_in.get(f"/runs/{run.id}/attempts/1/log/download/").status_code == 404
    assert signed_in.get(f"/runs/{run.id}/attempts/1/log/").status_code == 404


def test_a_running_log_downloads_with_its_secrets_masked(signed_in, member, make_batch, tmp_path, monkeypatch):
    monkeypatch.setenv("SPAWNER_TEST_TOKEN", "tok-3f9a-secret")
    run = make_batch(member).runs.get(key="lint")
    run.agent_type.secret_names = ["SPAWNER_TEST_TOKEN"]
    run.agent_type.save()
    # Longer than one download chunk, with the secret across a chunk boundary.
    content = b"x" * (64 * 1024 - 5) + b"tok-3f9a-secret and again tok-3f9a-secret\n" + b"line\n" * 10
    with_log(run, tmp_path, content)
    response = signed_in.get(f"/runs/{run.id}/attempts/1/log/download/")
    body = b"".join(response)
    assert b"tok-3f9a" not in body and b"*** and again ***\n" in body
    with_log(run, tmp_path, b"start\n" + b"x" * 500 + b" tok-3f9a-secret and again tok-3f9a-secret\n")
    earlier = signed_in.get(f"/runs/{run.id}/attempts/1/log/?before=600").content.decode()
    assert "tok-3f9a" not in earlier and "*** and again ***" in earlier
