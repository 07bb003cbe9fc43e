"""Bad input gets a clear answer, never a server error: ids beyond what the database holds, odd
digits, unknown websocket paths."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.test import Client

from dashboard.ids import parse_id
from dashboard.live import relay
from spawner.asgi import application

BIG = str(2**63)  # one past the largest id the database stores
HX = {"HX-Request": "true"}


def test_ids_are_ascii_digits_in_the_64_bit_range():
    assert parse_id("42") == 42
    assert parse_id(str(2**63 - 1)) == 2**63 - 1
    for text in (BIG, "9" * 40, "²", "١٢", "-1", " 1", "1_000", "", None):
        assert parse_id(text) is None, text


@pytest.mark.parametrize("query", [f"owner={BIG}", "owner=²", f"page={BIG}", "page=²", f"status=running&owner={BIG}0"])
def test_the_batches_list_ignores_a_filter_that_is_not_an_id(signed_in, member, make_batch, query):
    make_batch(member)
    for headers in ({}, HX):
        response = signed_in.get(f"/?{query}", headers=headers)
        assert response.status_code == 200, query


@pytest.mark.parametrize("query", [f"batch={BIG}", "batch=²", f"page={BIG}"])
def test_the_escalations_queue_ignores_a_filter_that_is_not_an_id(signed_in, reviewed, query):
    assert signed_in.get(f"/escalations/?{query}").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        f"/batches/{BIG}/",
        f"/batches/{BIG}.json",
        f"/batches/{BIG}/compare/",
        f"/batches/{BIG}/result/",
        f"/batches/{BIG}/result.md",
        f"/batches/{BIG}/result.json",
        f"/runs/{BIG}/",
        f"/runs/1/attempts/{BIG}/log/",
        f"/runs/1/attempts/{BIG}/log/download/",
        "/batches/99999999999999999999999/",
    ],
)
def test_an_id_beyond_the_database_range_is_not_found(signed_in, path):
    assert signed_in.get(path).status_code == 404


@pytest.mark.parametrize(
    "path",
    [f"/batches/{BIG}/cancel/", f"/runs/{BIG}/retry/", f"/escalations/{BIG}/resolve/", f"/batches/{BIG}/reviews/"],
)
def test_a_post_to_an_id_beyond_the_database_range_is_not_found(signed_in, path):
    assert signed_in.post(path, {"action": "accept", "decision": "approve"}).status_code == 404


def test_loading_earlier_output_with_a_huge_offset_is_fine(signed_in, member, make_batch, tmp_path):
    from spawner.models import RunAttempt

    run = make_batch(member).runs.get(key="lint")
    (tmp_path / "l.log").write_bytes(b"line\n" * 10)
    RunAttempt.objects.filter(run=run).update(log_path=str(tmp_path / "l.log"))
    for before in (BIG, "9" * 40, "²", "-5"):
        assert signed_in.get(f"/runs/{run.id}/attempts/1/log/?before={before}").status_code == 200


@pytest.fixture
def ws(member):
    client = Client()
    client.force_login(member)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    channel_layers.backends = {}

    def open_(path: str):
        async def scenario():
            communicator = WebsocketCommunicator(
                application,
                path,
                headers=[(b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", cookie)],
            )
            connected, code = await communicator.connect()
            first = await communicator.receive_output(timeout=3) if connected else None
            await communicator.disconnect()
            live = relay.get_relay()
            live.topics.clear()
            if live.task:
                await live.task
            return connected, code, first

        return async_to_sync(scenario)()

    yield open_
    channel_layers.backends = {}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "path", [f"/ws/batches/{BIG}/", f"/ws/runs/{BIG}/", f"/ws/batches/{BIG}/result/", "/ws/nothing/", "/ws/", "/x"]
)
def test_a_websocket_path_no_route_knows_is_closed_as_not_found(ws, path):
    connected, _, first = ws(path)
    assert connected and first == {"type": "websocket.close", "code": 4404}, (path, first)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("query", [f"owner={BIG}", "owner=²", f"page={BIG}"])
def test_the_live_list_ignores_a_filter_that_is_not_an_id(ws, query):
    connected, _, first = ws(f"/ws/batches/?{query}")
    assert connected and first["type"] == "websocket.send", first


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("query", [f"batch={BIG}", "batch=²"])
def test_the_live_queue_ignores_a_filter_that_is_not_an_id(ws, query):
    connected, _, first = ws(f"/ws/escalations/?{query}")
    assert connected and first["type"] == "websocket.send", first


def test_a_missing_batch_gets_the_sites_not_found_page(signed_in, settings):
    settings.DEBUG = False
    response = signed_in.get("/batches/99999999999999999999/")
    assert response.status_code == 404
    html = response.content.decode()
    assert "Not found" in html and "Back to the batches" in html
