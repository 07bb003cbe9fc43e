"""`review.requested`: a batch that ends with a combined result to sign off calls its webhook and
the own addresses of the people whose approval would count, signed, logged and redeliverable."""

from __future__ import annotations

import time

import pytest

from spawner import services
from spawner.core import signing
from spawner.engine import dispatch, webhooks
from spawner.models import AgentRun, Batch, WebhookDelivery
from spawner.states import RunStatus
from tests.spawner.helpers import launch
from tests.spawner.test_fanin import teammate
from tests.spawner.test_webhooks import allow_loopback, receiver, spend_every_try  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(120)
TWO = "name: rv\nagent: sh\nwebhook: {url}\ntasks:\n  - {{key: a, prompt: 'true'}}\n  - {{key: b, prompt: 'true'}}\n"


def deliver_all() -> None:
    while webhooks.deliver_due():
        pass


def end(batch: Batch, statuses=(RunStatus.SUCCEEDED, RunStatus.SUCCEEDED)) -> Batch:
    """End the batch through the engine's own path: its runs ended, the next advance closes it."""
    for run, status in zip(AgentRun.objects.filter(batch=batch).order_by("order"), statuses, strict=True):
        AgentRun.objects.filter(id=run.id).update(status=status, result={"summary": f"{run.key} done"})
    dispatch.batch_advance(batch.id)
    batch.refresh_from_db()
    return batch


def signed(request, secret: str) -> bool:
    headers = request["headers"]
    return signing.verify(
        secret, request["body"], headers["Spawner-Timestamp"], headers["Spawner-Signature"], now=time.time()
    )


@pytest.fixture
def team(db):
    owner = teammate("olga", "review_batch")  # may review, but her own approval does not count
    rita = teammate("rita", "review_batch")  # a reviewer with an address of her own
    sam = teammate("sam", "review_batch")  # a reviewer without one
    vic = teammate("vic")  # no permission to review, though he has an address
    return owner, rita, sam, vic


def test_an_ended_batch_asks_the_batch_webhook_and_each_reviewers_own_address_signed(
    allow_loopback,  # noqa: F811
    receiver,  # noqa: F811
    agent_types,
    tmp_path,
    team,
    monkeypatch,
):
    monkeypatch.setenv("SPAWNER_WEBHOOK_SECRET", "review-secret")
    owner, rita, sam, vic = team
    batch_hook, ritas, olgas, vics = receiver(), receiver(), receiver(), receiver()
    services.personal_webhook_set(user=rita, url=ritas.url, fmt="slack")
    services.personal_webhook_set(user=owner, url=olgas.url)
    services.personal_webhook_set(user=vic, url=vics.url)
    batch = launch(TWO.format(url=batch_hook.url), tmp_path)
    Batch.objects.filter(id=batch.id).update(owner=owner)
    batch.refresh_from_db()

    assert not WebhookDelivery.objects.filter(event="review.requested").exists()  # not while it runs
    assert end(batch).status == "succeeded"
    rows = WebhookDelivery.objects.filter(event="review.requested").order_by("id")
    assert [(r.url, r.recipient_id) for r in rows] == [(batch_hook.url, None), (ritas.url, rita.id)]
    deliver_all()
    assert all(r.state == "delivered" for r in WebhookDelivery.objects.filter(batch=batch))

    events = [r["json"]["event"] for r in batch_hook.requests]
    assert events == ["batch.ended", "review.requested"]
    asked = batch_hook.requests[1]
    assert asked["json"] == {
        "event": "review.requested",
        "batch": batch.id,
        "name": "rv",
        "status": "succeeded",
        "aggregation": "complete",
        "review_state": "pending",
        "approvals_needed": 1,
        "approvals_counted": 0,
    }
    assert signed(asked, "review-secret") and not signed(asked, "another-secret")
    # Rita's own address is Slack-format: one line, signed the same way.
    (to_rita,) = ritas.requests
    assert to_rita["json"] == {"text": f"Batch #{batch.id} rv: its result waits for review (0 of 1 approvals)."}
    assert signed(to_rita, "review-secret")
    # The owner's approval does not count, so she is not asked; Vic may not review; Sam has no address.
    assert olgas.requests == [] and vics.requests == []


def test_no_request_for_an_empty_result_and_none_to_who_already_approved(
    allow_loopback,  # noqa: F811
    receiver,  # noqa: F811
    agent_types,
    tmp_path,
    team,
    settings,
):
    owner, rita, sam, _ = team
    ritas, sams = receiver(), receiver()
    services.personal_webhook_set(user=rita, url=ritas.url)
    services.personal_webhook_set(user=sam, url=sams.url)

    # Every run failed: no combined result, nothing to review (the batch still ends, and says so).
    failed = launch(TWO.format(url=ritas.url), tmp_path)
    assert end(failed, (RunStatus.FAILED, RunStatus.FAILED)).status == "failed"
    assert list(WebhookDelivery.objects.filter(batch=failed).values_list("event", flat=True)) == ["batch.ended"]

    # Two approvals needed, Rita approved already (a batch retried after her review): only Sam is asked.
    settings.SPAWNER = {**settings.SPAWNER, "REVIEW_APPROVALS": 2}
    batch = launch(TWO.replace("webhook: {url}\n", "").format(), tmp_path)
    Batch.objects.filter(id=batch.id).update(owner=owner)
    batch.refresh_from_db()
    services.review_submit(batch=batch, author=rita, decision="approve")
    end(batch)
    rows = WebhookDelivery.objects.filter(batch=batch, event="review.requested")
    assert [(r.url, r.recipient_id) for r in rows] == [(sams.url, sam.id)]  # no batch webhook: Sam's own only
    deliver_all()
    (to_sam,) = sams.requests
    assert to_sam["json"]["to_you"] is True and to_sam["json"]["approvals_counted"] == 1
    assert to_sam["json"]["approvals_needed"] == 2 and to_sam["json"]["review_state"] == "pending"

    # Already approved (the owner's approval counting here): nobody is asked.
    settings.SPAWNER = {**settings.SPAWNER, "REVIEW_APPROVALS": 1, "REVIEW_OWNER_COUNTS": True}
    approved = launch(TWO.format(url=ritas.url), tmp_path)
    Batch.objects.filter(id=approved.id).update(owner=owner)
    approved.refresh_from_db()
    services.review_submit(batch=approved, author=owner, decision="approve")
    end(approved)
    assert not WebhookDelivery.objects.filter(batch=approved, event="review.requested").exists()


def test_a_failed_review_request_is_redelivered_by_an_admin(
    allow_loopback,  # noqa: F811
    receiver,  # noqa: F811
    agent_types,
    tmp_path,
    django_user_model,
):
    hook = receiver(statuses=(500, 500, 500, 204))
    batch = launch(TWO.format(url=hook.url), tmp_path)
    end(batch)
    row = WebhookDelivery.objects.get(batch=batch, event="review.requested")
    WebhookDelivery.objects.filter(batch=batch, event="batch.ended").delete()  # only the request, here
    spend_every_try(row)
    admin = django_user_model.objects.create_superuser("ada", password="pw-ada-12345")
    services.webhook_redeliver(delivery_id=row.id, actor=admin)
    deliver_all()
    row.refresh_from_db()
    assert row.state == "delivered" and row.last_status == 204 and row.redelivered_by == admin
    assert [r["json"]["event"] for r in hook.requests] == ["review.requested"] * 4
