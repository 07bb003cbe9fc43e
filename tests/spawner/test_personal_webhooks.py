"""A person's own notification webhook (an escalation assigned to them is sent there, signed, as
well as to the batch's), and the delivery log saying who redelivered a call and when."""

from __future__ import annotations

import time

import pytest

from spawner import services
from spawner.core import signing
from spawner.engine import transitions, webhooks
from spawner.errors import ActionRefused
from spawner.models import Batch, Escalation, PersonalWebhook, WebhookDelivery
from tests.spawner.test_webhooks import allow_loopback, no_allow, queued, receiver  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def people(django_user_model):
    admin = django_user_model.objects.create_superuser("ada", password="pw-ada-12345")
    bo = django_user_model.objects.create_user("bo", password="pw-bo-123456")
    return admin, bo


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://localhost/hook", "localhost"),
        ("ftp://hooks.example.org/x", "http(s)"),
        ("https://hooks.example.org/" + "x" * 200, "maximum is 200"),
    ],
)
def test_the_same_ssrf_rules_as_a_batchs_webhook(db, no_allow, people, url, message):  # noqa: F811
    with pytest.raises(ActionRefused, match=message.replace("(", r"\(").replace(")", r"\)")):
        services.personal_webhook_set(user=people[1], url=url)
    assert not PersonalWebhook.objects.exists()


def test_set_replace_and_remove(db, no_allow, people):  # noqa: F811
    bo = people[1]
    services.personal_webhook_set(user=bo, url="https://hooks.example.org/bo")
    services.personal_webhook_set(user=bo, url=" https://hooks.example.org/bo2 ", fmt="slack")
    own = PersonalWebhook.objects.get(user=bo)
    assert (own.url, own.format) == ("https://hooks.example.org/bo2", "slack")
    with pytest.raises(ActionRefused, match="json or slack"):
        services.personal_webhook_set(user=bo, url="https://hooks.example.org/bo", fmt="xml")
    assert services.personal_webhook_set(user=bo, url="") is None and not PersonalWebhook.objects.exists()


def test_an_assigned_escalation_goes_to_the_assignees_own_address_signed(
    db,
    allow_loopback,  # noqa: F811
    receiver,  # noqa: F811
    people,
    monkeypatch,
):
    monkeypatch.setenv("SPAWNER_WEBHOOK_SECRET", "bo-knows-it")
    admin, bo = people
    batch_hook, bos_hook = receiver(), receiver()
    services.personal_webhook_set(user=bo, url=bos_hook.url)
    batch = Batch.objects.create(name="b", spec={}, webhook_url=batch_hook.url)
    escalation = transitions.escalation_open(batch=batch, run=None, kind=Escalation.Kind.BUDGET, reason="hit")
    services.escalation_assign(escalation=escalation, assignee=bo, actor=admin)

    rows = WebhookDelivery.objects.filter(event="escalation.assigned").order_by("id")
    assert [(r.url, r.recipient_id) for r in rows] == [(batch_hook.url, None), (bos_hook.url, bo.id)]
    while webhooks.deliver_due():
        pass
    to_batch = [r["json"]["event"] for r in batch_hook.requests]
    assert to_batch == ["escalation.opened", "budget.reached", "escalation.assigned"]
    (to_bo,) = bos_hook.requests  # only what is his: not the escalation's opening
    assert to_bo["json"]["assignee"] == "bo" and to_bo["json"]["to_you"] is True
    assert to_bo["json"]["escalation"] == escalation.id
    headers = to_bo["headers"]
    assert signing.verify(
        "bo-knows-it", to_bo["body"], headers["Spawner-Timestamp"], headers["Spawner-Signature"], now=time.time()
    )

    # Assigned to someone without an address of their own (ada): the batch's webhook only.
    services.escalation_assign(escalation=escalation, assignee=admin, actor=admin)
    assert WebhookDelivery.objects.filter(event="escalation.assigned").count() == 3
    # A batch without a webhook: the assignee's own address still hears of it.
    quiet = Batch.objects.create(name="quiet", spec={})
    other = transitions.escalation_open(batch=quiet, run=None, kind=Escalation.Kind.BUDGET, reason="hit")
    services.escalation_assign(escalation=other, assignee=bo, actor=admin)
    assert list(WebhookDelivery.objects.filter(batch=quiet).values_list("url", flat=True)) == [bos_hook.url]


def test_the_tokens_page_sets_it_masked_and_refuses_a_private_address(db, client, no_allow, people):  # noqa: F811
    bo = people[1]
    assert client.post("/tokens/notifications/", {"url": "https://x.example.org/"}).status_code == 302
    assert not PersonalWebhook.objects.exists()  # not signed in: the sign-in page, nothing saved
    client.force_login(bo)
    refused = client.post("/tokens/notifications/", {"url": "http://192.168.1.5/hook"})
    assert refused.status_code == 400 and "private" in refused.content.decode()
    secret_url = "https://hooks.slack.example.org/services/T000/B000/abcdef0123456789abcdef"
    saved = client.post("/tokens/notifications/", {"url": secret_url, "format": "slack"}, follow=True)
    page = saved.content.decode()
    assert "escalations assigned to you and reviews requested of you are sent there" in page
    assert "abcdef0123456789abcdef" not in page
    assert PersonalWebhook.objects.get(user=bo).url == secret_url
    client.post("/tokens/notifications/", {"url": ""})
    assert not PersonalWebhook.objects.exists()


def test_the_delivery_log_records_who_redelivered_and_when(db, client, people):
    admin, _ = people
    row = queued("https://hooks.example.org/x")
    WebhookDelivery.objects.filter(id=row.id).update(state="failed", attempts=6, last_error="HTTP 503")
    client.force_login(admin)
    assert "by ada at" not in client.get("/webhooks/").content.decode()
    client.post(f"/webhooks/{row.id}/redeliver/")
    row.refresh_from_db()
    assert row.state == "pending" and row.redelivered_by == admin and row.redelivered_at is not None
    page = client.get("/webhooks/").content.decode()
    assert f"by ada at {row.redelivered_at.astimezone(__import__('datetime').UTC):%Y-%m-%d}" in page
