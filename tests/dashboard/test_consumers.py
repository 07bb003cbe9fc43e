"""Websockets: a snapshot on every connect, fragments as the event log grows, strangers refused."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.test import Client

from dashboard.live import topics
from dashboard.live.relay import get_relay
from spawner import services
from spawner.asgi import application
from spawner.models import AgentRun
from tests.dashboard.conftest import finish, move

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """Each test runs its own event loop; the in-memory layer must not outlive it."""
    channel_layers.backends = {}
    yield
    channel_layers.backends = {}


@pytest.fixture
def cookie(member):
    client = Client()
    client.force_login(member)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def run_async(scenario):
    async def wrapped():
        try:
            return await scenario()
        finally:
            relay = get_relay()
            relay.topics.clear()
            if relay.task:
                await asyncio.wait_for(relay.task, 5)

    return async_to_sync(wrapped)()


async def connect(path: str, cookie: bytes) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(
        application, path, headers=[(b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", cookie)]
    )
    connected, code = await communicator.connect()
    assert connected, code
    return communicator


def assert_rows_travel_alone(messages: list[str]) -> None:
    """A parser drops table rows that follow a block element: rows must lead their message."""
    for message in messages:
        if "<tr" in message:
            assert message.lstrip().startswith(("<tr", "<tbody")), message[:80]


async def receive_until(communicator, text: str, timeout: float = 5.0) -> str:
    """Messages until one contains `text` (earlier fragments may be about other changes)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        message = await communicator.receive_from(timeout=max(remaining, 0.01))
        if text in message:
            return message


def test_a_batch_page_gets_a_snapshot_on_connect(member, make_batch, cookie):
    batch = make_batch(member)

    async def scenario():
        ws = await connect(f"/ws/batches/{batch.id}/", cookie)
        messages = [await ws.receive_from(timeout=5), await ws.receive_from(timeout=5)]
        await ws.disconnect()
        return messages

    messages = run_async(scenario)
    assert_rows_travel_alone(messages)
    snapshot = "".join(messages)
    assert 'id="batch-header"' in snapshot
    assert 'id="run-rows"' in snapshot and snapshot.count('class="run-row"') == 3
    assert f'id="timeline-{batch.id}"' in snapshot


def test_a_run_changing_state_sends_its_row(member, make_batch, cookie):
    batch = make_batch(member)
    lint = batch.runs.get(key="lint")

    async def scenario():
        ws = await connect(f"/ws/batches/{batch.id}/", cookie)
        await receive_until(ws, 'id="run-rows"')
        await database_sync_to_async(move)(lint, "running")
        header = await receive_until(ws, 'id="batch-header"')  # the counts changed
        row = await receive_until(ws, f'id="run-{lint.id}"')
        await ws.disconnect()
        return header, row

    header, row = run_async(scenario)
    assert "1 running" in header
    assert "Running" in row
    assert_rows_travel_alone([header, row])


def test_output_reaches_the_run_page_escaped(member, make_batch, cookie):
    lint = make_batch(member).runs.get(key="lint")

    async def scenario():
        ws = await connect(f"/ws/runs/{lint.id}/", cookie)
        snapshot = await ws.receive_from(timeout=5)
        await database_sync_to_async(move)(lint, "running")
        running = await database_sync_to_async(lambda: lint.__class__.objects.get(id=lint.id))()
        await database_sync_to_async(move)(running, "running", output="step 1 <ok>\n\x1b[31mred\x1b[0m\n")
        fragment = await receive_until(ws, "step 1")
        await ws.disconnect()
        return snapshot, fragment

    snapshot, fragment = run_async(scenario)
    assert 'id="run-header"' in snapshot and 'id="attempts"' in snapshot and 'id="run-tail"' in snapshot
    assert 'id="run-tail"' in fragment
    assert "step 1 &lt;ok&gt;" in fragment and '<span class="ansi-red">red</span>' in fragment


def test_the_list_updates_when_a_batch_ends(member, make_batch, cookie):
    batch = make_batch(member)

    async def scenario():
        ws = await connect("/ws/batches/?status=succeeded", cookie)
        snapshot = await ws.receive_from(timeout=5)
        await database_sync_to_async(finish)(batch)
        fragment = await receive_until(ws, f'id="batch-{batch.id}"')
        await ws.disconnect()
        return snapshot, fragment

    snapshot, fragment = run_async(scenario)
    assert 'id="batch-table"' in snapshot and f'id="batch-{batch.id}"' not in snapshot
    assert "Succeeded" in fragment


def test_a_reconnect_gets_what_changed_while_away(member, make_batch, cookie):
    batch = make_batch(member)
    lint = batch.runs.get(key="lint")

    async def scenario():
        ws = await connect(f"/ws/batches/{batch.id}/", cookie)
        await receive_until(ws, 'id="run-rows"')
        await ws.disconnect()
        await database_sync_to_async(move)(lint, "running")
        ws = await connect(f"/ws/batches/{batch.id}/", cookie)
        snapshot = await receive_until(ws, 'id="run-rows"')
        await ws.disconnect()
        return snapshot

    snapshot = run_async(scenario)
    row = snapshot.split(f'id="run-{lint.id}"', 1)[1].split("</tr>", 1)[0]
    assert "Running" in row


def test_the_comparison_updates_when_either_batch_changes(member, make_batch, cookie):
    batch = finish(make_batch(member))

    async def scenario():
        ws = await connect(f"/ws/batches/{batch.id}/compare/", cookie)
        snapshot = await ws.receive_from(timeout=5)
        from spawner import services

        rerun = await database_sync_to_async(services.batch_rerun_sequential)(batch=batch, actor=member)
        fragment = await receive_until(ws, f'id="timeline-{rerun.id}"')
        await ws.disconnect()
        return snapshot, fragment

    snapshot, fragment = run_async(scenario)
    assert "has not been re-run sequentially yet" in snapshot
    assert 'id="comparison"' in fragment


def test_an_unknown_batch_is_refused_with_a_code_that_is_not_retried(cookie):
    async def scenario():
        communicator = WebsocketCommunicator(
            application,
            "/ws/batches/999/",
            headers=[(b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", cookie)],
        )
        connected, _ = await communicator.connect()
        # Accepted, then closed: a refused handshake would reach the browser as 1006, which it retries.
        return connected, await communicator.receive_output(timeout=3)

    connected, closing = run_async(scenario)
    assert (connected, closing) == (True, {"type": "websocket.close", "code": 4404})


def test_a_server_initiated_close_asks_the_client_to_reconnect(member, make_batch, cookie):
    batch = make_batch(member)

    async def scenario():
        ws = await connect(f"/ws/batches/{batch.id}/", cookie)
        await receive_until(ws, 'id="run-rows"')
        topic = next(iter(get_relay().topics.values()))
        await get_relay().layer.group_send(topic.name, {"type": "live.close"})
        return await ws.receive_output(timeout=5)

    message = run_async(scenario)
    assert message == {"type": "websocket.close", "code": 1012}


def test_many_changes_to_one_run_render_its_row_once(member, make_batch):
    batch = make_batch(member)
    lint = batch.runs.get(key="lint")
    topic = topics.BatchTopic(batch.id)
    for i in range(20):
        topic.collect(topics.Event(id=i, batch_id=batch.id, run_id=lint.id, kind="run.output"))
    assert topic.due(now=100.0)
    html = "".join(topic.take(now=100.0))
    assert html.count(f'id="run-{lint.id}"') == 1
    assert 'id="batch-header"' not in html  # output changes no figure
    assert not topic.due(now=100.05)


def test_a_flood_of_changed_rows_is_coalesced_over_a_window(member, make_batch):
    batch = make_batch(member)
    topic = topics.BatchTopic(batch.id)
    lint = batch.runs.get(key="lint")
    topic.collect(topics.Event(id=1, batch_id=batch.id, run_id=lint.id, kind="run.running"))
    topic.take(now=100.0)
    for i in range(topics.BURST_ROWS + 1):  # more changed rows than one message should carry
        topic.collect(topics.Event(id=2 + i, batch_id=batch.id, run_id=10_000 + i, kind="run.output"))
    assert not topic.due(now=100.1)
    assert topic.due(now=100.0 + topics.BURST_SECONDS)


def test_a_few_changed_rows_go_out_at_once(member, make_batch):
    batch = make_batch(member)
    topic = topics.BatchTopic(batch.id)
    lint = batch.runs.get(key="lint")
    topic.collect(topics.Event(id=1, batch_id=batch.id, run_id=lint.id, kind="run.running"))
    topic.take(now=100.0)
    topic.collect(topics.Event(id=2, batch_id=batch.id, run_id=lint.id, kind="run.succeeded"))
    assert topic.due(now=100.1)


def test_a_topic_whose_batch_was_deleted_closes_its_clients_for_good(member, make_batch):
    from dashboard.live.relay import GONE, _render_all

    batch = make_batch(member)
    topic = topics.BatchTopic(batch.id)
    topic.collect(topics.Event(id=1, batch_id=batch.id, run_id=None, kind="batch.cancel_requested"))
    batch.delete()
    assert _render_all([topic], now=100.0) == [(topic.name, GONE)]


# --- fan-in: the header badge, the escalations queue, a batch's result ---------------------


def open_p0_escalation(batch):
    """A P0 run fails: the engine opens an escalation after recording the failure."""
    AgentRun.objects.filter(batch=batch, key="lint").update(priority=0)
    run = batch.runs.get(key="lint")
    return move(move(run, "running"), "failed", error="exit code 1")


def test_the_header_badge_counts_open_escalations_live(member, make_batch, cookie):
    from spawner.models import AgentRun

    batch = make_batch(member)
    AgentRun.objects.filter(batch=batch, key="lint").update(priority=0)

    async def scenario():
        ws = await connect("/ws/site/", cookie)
        snapshot = await ws.receive_from(timeout=5)
        await database_sync_to_async(open_p0_escalation)(batch)
        opened = await receive_until(ws, 'id="escalation-badge"')
        await ws.disconnect()
        return snapshot, opened

    snapshot, opened = run_async(scenario)
    assert '<span class="count">0</span>' in snapshot and "has-open" not in snapshot
    assert '<span class="count">1</span>' in opened and "has-open" in opened


def test_the_queue_puts_a_new_escalation_on_top_and_updates_its_card(member, make_batch, cookie):
    from spawner.models import AgentRun, Escalation

    batch = make_batch(member)
    AgentRun.objects.filter(batch=batch, key="lint").update(priority=0)

    async def scenario():
        ws = await connect("/ws/escalations/", cookie)
        snapshot = await ws.receive_from(timeout=5)
        await database_sync_to_async(open_p0_escalation)(batch)
        opened = await receive_until(ws, "afterbegin:#escalation-list")
        escalation = await database_sync_to_async(Escalation.objects.get)(batch=batch)
        await database_sync_to_async(services.escalation_assign)(escalation=escalation, assignee=member, actor=member)
        assigned = await receive_until(ws, '<strong class="assignee">mia</strong>')
        await ws.disconnect()
        return snapshot, opened, assigned, escalation

    snapshot, opened, assigned, escalation = run_async(scenario)
    assert 'id="escalation-queue"' in snapshot and 'id="escalation-list"></div>' in snapshot
    assert f'id="escalation-{escalation.id}"' in opened and 'id="queue-tabs"' in opened
    assert 'Open <span class="count">1</span>' in opened
    assert 'hx-swap-oob="afterbegin:#escalation-list"' not in assigned, "a known card is replaced, not added"
    assert assigned.count(f'<article id="escalation-{escalation.id}"') == 1


def test_a_card_follows_its_run_after_a_retry(member, make_batch, cookie):
    from spawner.models import AgentRun, Escalation

    batch = make_batch(member)
    AgentRun.objects.filter(batch=batch, key="lint").update(priority=0)
    run = open_p0_escalation(batch)
    escalation = Escalation.objects.get(batch=batch)

    async def scenario():
        ws = await connect("/ws/escalations/?show=all", cookie)
        await ws.receive_from(timeout=5)
        await database_sync_to_async(services.escalation_resolve)(escalation=escalation, action="retry", actor=member)
        retried = await receive_until(ws, "Retried the run")
        running = await database_sync_to_async(AgentRun.objects.get)(id=run.id)
        await database_sync_to_async(move)(running, "running")
        moved = await receive_until(ws, 'class="badge running"')
        await ws.disconnect()
        return retried, moved

    retried, moved = run_async(scenario)
    assert "<strong>mia</strong> resolved it by retrying the run" in retried
    assert f'id="escalation-{escalation.id}"' in moved


def test_the_result_page_hears_of_new_reviews(member, make_batch, cookie, settings):
    settings.SPAWNER = {**settings.SPAWNER, "REVIEW_OWNER_COUNTS": True}  # the owner's approval suffices

    batch = finish(make_batch(member))

    async def scenario():
        ws = await connect(f"/ws/batches/{batch.id}/result/", cookie)
        snapshot = await ws.receive_from(timeout=5)
        await database_sync_to_async(services.review_submit)(batch=batch, author=member, decision="approve")
        approved = await receive_until(ws, 'id="review-record"')
        await ws.disconnect()
        return snapshot, approved

    snapshot, approved = run_async(scenario)
    assert 'id="result-header"' in snapshot and "No reviews yet" in snapshot
    assert "review: approved" in approved and "<strong>mia</strong>" in approved


@pytest.mark.parametrize("wake_ups", [True, False], ids=["woken", "polling"])
def test_a_committed_change_reaches_the_browser_woken_or_polled(member, make_batch, cookie, settings, wake_ups):
    """Woken: the relay's poll is ten minutes, so only the commit's wake-up can bring the row.
    Polling (wake-ups off): the relay's poll alone brings it, as before wake-ups existed."""
    settings.SPAWNER = {**settings.SPAWNER, "WAKE": wake_ups}
    settings.DASHBOARD = {**settings.DASHBOARD, "RELAY_POLL_SECONDS": 600 if wake_ups else 0.1}
    batch = make_batch(member)
    lint = batch.runs.get(key="lint")

    async def scenario():
        ws = await connect(f"/ws/batches/{batch.id}/", cookie)
        await receive_until(ws, 'id="run-rows"')
        await asyncio.sleep(0.3)  # the relay has taken its first step and now waits
        await database_sync_to_async(move)(lint, "running")
        row = await receive_until(ws, f'id="run-{lint.id}"', timeout=30)
        await database_sync_to_async(lambda: move(AgentRun.objects.get(id=lint.id), "succeeded"))()
        done = await receive_until(ws, "Succeeded", timeout=30)
        await ws.disconnect()
        return row, done

    row, done = run_async(scenario)
    assert "Running" in row
    assert f'id="run-{lint.id}"' in done
