"""Webhooks: an outbox sent by the cluster (never an agent's worker), only to public addresses."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.db import transaction
from django.utils import timezone

from spawner import services
from spawner.core import signing
from spawner.engine import transitions, webhooks
from spawner.errors import ActionRefused, NotAllowed
from spawner.models import Batch, Escalation, WebhookDelivery
from tests.spawner.helpers import launch, wait_batch, wait_for

pytestmark = pytest.mark.timeout(180)
HOOKED = "name: w\nagent: sh\nwebhook: {url}\ntasks:\n  - {{key: a, prompt: 'true'}}\n"
FIVE_TRUE = "name: five\nagent: sh\nmax_parallel: 5\ntasks:\n" + "".join(
    f"  - {{key: t{i}, prompt: 'true'}}\n" for i in range(5)
)


class Receiver:
    """A small HTTP server in a thread that answers POSTs with the statuses it is given."""

    def __init__(self, statuses=(204,), location: str = ""):
        self.requests: list[dict] = []
        statuses = list(statuses)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "json": json.loads(body), "body": body}
                )
                self.send_response(statuses.pop(0) if len(statuses) > 1 else statuses[0])
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(*args, **kwargs):
        made.append(Receiver(*args, **kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def hanging_url():
    """A port that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(200)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hangs"
    sock.close()


@pytest.fixture
def allow_loopback(settings):
    settings.SPAWNER = {
        **settings.SPAWNER,
        "WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "WEBHOOK_TIMEOUT_SECONDS": 1,
        "WEBHOOK_ATTEMPTS": 3,
        "WEBHOOK_BACKOFF_SECONDS": 0.2,
    }


@pytest.fixture
def no_allow(settings):
    settings.SPAWNER = {**settings.SPAWNER, "WEBHOOK_ALLOW_HOSTS": "", "WEBHOOK_TIMEOUT_SECONDS": 1}


def queued(url: str, event: str = "batch.ended") -> WebhookDelivery:
    batch = Batch.objects.create(name="b", spec={}, webhook_url=url, status="succeeded")
    return webhooks.notify(batch, event, {"wall_seconds": 1.5})


# --- on the real cluster ---------------------------------------------------------------------


@pytest.mark.integration
def test_dead_webhooks_hold_no_agent_slot_so_the_next_batch_still_runs_at_once(
    cluster, agent_types, tmp_path, allow_loopback, hanging_url
):
    # As many batches with a hanging webhook as the cluster has workers (12).
    dead = [launch(HOOKED.format(url=hanging_url), tmp_path) for _ in range(12)]
    for batch in dead:
        assert wait_batch(batch, timeout=60).status == "succeeded"
    started = time.monotonic()
    batch = wait_batch(launch(FIVE_TRUE, tmp_path), timeout=90)
    took = time.monotonic() - started
    assert batch.status == "succeeded"
    assert took < 10, f"a 5 x true batch took {took:.1f} s behind 12 dead webhooks"


@pytest.mark.integration
def test_a_live_webhook_receives_the_json_post_from_the_cluster(
    cluster, agent_types, tmp_path, allow_loopback, receiver
):
    hook = receiver()
    batch = wait_batch(launch(HOOKED.format(url=hook.url), tmp_path))
    wait_for(lambda: hook.requests, 20, "the webhook call")
    request = hook.requests[0]
    assert request["path"] == "/hook" and request["headers"]["Content-Type"] == "application/json"
    assert request["json"]["event"] == "batch.ended"
    assert request["json"]["batch"] == batch.id and request["json"]["status"] == "succeeded"
    row = wait_for(lambda: WebhookDelivery.objects.filter(batch=batch, state="delivered").first(), 10, "the record")
    assert row.attempts == 1 and row.last_status == 204
    # Its result waits for sign-off: the review request follows the end (tests/spawner/test_review_webhooks.py).
    wait_for(lambda: len(hook.requests) == 2, 20, "the review request")
    assert hook.requests[1]["json"]["event"] == "review.requested"
    assert hook.requests[1]["json"]["review_state"] == "pending"


@pytest.mark.integration
def test_the_clusters_call_is_signed_with_the_secret_derived_from_the_secret_key(
    cluster, agent_types, tmp_path, allow_loopback, receiver, settings, monkeypatch
):
    assert "SPAWNER_WEBHOOK_SECRET" not in cluster.env  # so the cluster derives it from SECRET_KEY
    hook = receiver()
    wait_batch(launch(HOOKED.format(url=hook.url), tmp_path))
    wait_for(lambda: hook.requests, 20, "the webhook call")
    request = hook.requests[0]
    stamp, sent = request["headers"]["Spawner-Timestamp"], request["headers"]["Spawner-Signature"]
    secret = signing.derive_secret(settings.SECRET_KEY)
    assert signing.problem(secret, request["body"], stamp, sent, now=time.time()) == ""
    assert abs(int(stamp) - time.time()) < 60
    assert not signing.verify("a-wrong-secret", request["body"], stamp, sent, now=time.time())
    assert not signing.verify(secret, request["body"] + b" ", stamp, sent, now=time.time())


# --- one delivery step at a time ------------------------------------------------------------


def test_a_webhook_is_queued_in_the_transaction_of_its_change_and_rolls_back_with_it(db):
    batch = Batch.objects.create(name="b", spec={}, webhook_url="https://hooks.example.org/x")
    with pytest.raises(RuntimeError), transaction.atomic():
        webhooks.notify(batch, "batch.ended", {})
        raise RuntimeError("the change failed")
    assert not WebhookDelivery.objects.exists()
    webhooks.notify(batch, "batch.ended", {})
    assert WebhookDelivery.objects.get().state == "pending"


def test_a_webhook_to_the_metadata_address_is_refused_recorded_and_never_connected(db, no_allow, monkeypatch):
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("connected"))
    row = queued("http://169.254.169.254/latest/meta-data/")
    assert webhooks.deliver_due() is True
    row.refresh_from_db()
    assert row.state == "failed" and row.attempts == 1
    assert "link-local" in row.last_error
    assert webhooks.deliver_due() is False  # refused for good: not retried


@pytest.mark.parametrize("address", ["10.0.0.5", "127.0.0.1", "::1", "::ffff:169.254.169.254", "fd00::1"])
def test_a_name_that_resolves_to_a_private_address_is_refused_after_the_lookup(db, no_allow, monkeypatch, address):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda host, port, **kw: [(family, socket.SOCK_STREAM, 6, "", (address, port))]
    )
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("connected"))
    row = queued("https://hooks.example.org/x")
    webhooks.deliver_due()
    row.refresh_from_db()
    assert row.state == "failed" and "refused: hooks.example.org resolves to" in row.last_error


def test_the_address_checked_is_the_address_connected_to_so_dns_cannot_change_it(db, no_allow, monkeypatch):
    lookups, connects = [], []

    def getaddrinfo(host, port, **kw):
        lookups.append(host)  # a rebinding resolver would answer 127.0.0.1 the second time
        address = "93.184.215.14" if len(lookups) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    def create_connection(address, *args, **kwargs):
        connects.append(address)
        raise OSError("no network in tests")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    queued("http://hooks.example.org:8080/x")
    webhooks.deliver_due()
    assert lookups == ["hooks.example.org"] and connects == [("93.184.215.14", 8080)]


def test_a_redirect_is_not_followed_and_fails_the_delivery(db, allow_loopback, receiver):
    hook = receiver(statuses=(302,), location="http://169.254.169.254/latest/meta-data/")
    row = queued(hook.url)
    webhooks.deliver_due()
    row.refresh_from_db()
    assert len(hook.requests) == 1
    assert row.state == "failed" and "redirect" in row.last_error and "not followed" in row.last_error


def test_a_failing_webhook_is_retried_with_backoff_until_it_is_delivered(db, allow_loopback, receiver):
    hook = receiver(statuses=(503, 503, 204))
    row = queued(hook.url)
    webhooks.deliver_due()
    row.refresh_from_db()
    assert row.state == "pending" and row.attempts == 1 and row.last_status == 503
    assert row.next_attempt_at > timezone.now()
    assert webhooks.deliver_due() is False  # not due yet
    webhooks.deliver_due(now=row.next_attempt_at)
    row.refresh_from_db()
    assert row.attempts == 2 and row.state == "pending"
    webhooks.deliver_due(now=row.next_attempt_at)
    row.refresh_from_db()
    assert row.state == "delivered" and row.attempts == 3 and len(hook.requests) == 3


def test_a_dead_webhook_gives_up_after_its_attempts_and_says_why(db, allow_loopback, hanging_url):
    row = queued(hanging_url)
    later = timezone.now()
    for _ in range(3):
        later += timedelta(hours=1)
        webhooks.deliver_due(now=later)
    row.refresh_from_db()
    assert row.state == "failed" and row.attempts == 3 and "timed out" in row.last_error


# --- signatures, events, redelivery ---------------------------------------------------------


def test_a_call_is_signed_with_the_secret_from_the_environment_when_set(
    db, allow_loopback, receiver, monkeypatch, settings
):
    monkeypatch.setenv("SPAWNER_WEBHOOK_SECRET", "from-the-environment")
    hook = receiver()
    row = queued(hook.url)
    webhooks.deliver_due()
    request = hook.requests[0]
    stamp, sent = request["headers"]["Spawner-Timestamp"], request["headers"]["Spawner-Signature"]
    assert sent.startswith("v1=") and signing.verify(
        "from-the-environment", request["body"], stamp, sent, now=time.time()
    )
    derived = signing.derive_secret(settings.SECRET_KEY)  # not used while the environment sets one
    assert not signing.verify(derived, request["body"], stamp, sent, now=time.time())
    row.refresh_from_db()
    assert "from-the-environment" not in json.dumps(row.payload) and row.state == "delivered"


def test_opening_and_assigning_an_escalation_and_reaching_the_budget_call_the_batchs_webhook(db, django_user_model):
    batch = Batch.objects.create(name="b", spec={}, webhook_url="https://hooks.example.org/x", budget_usd=2.0)
    admin = django_user_model.objects.create_superuser("ada", password="pw-ada-12345")
    escalation = transitions.escalation_open(batch=batch, run=None, kind=Escalation.Kind.BUDGET, reason="budget hit")
    services.escalation_assign(escalation=escalation, assignee=admin, actor=admin)
    rows = {row.event: row.payload for row in WebhookDelivery.objects.filter(batch=batch)}
    assert set(rows) == {"escalation.opened", "budget.reached", "escalation.assigned"}
    assert rows["escalation.opened"] == {
        "event": "escalation.opened",
        "batch": batch.id,
        "name": "b",
        "status": batch.status,
        "escalation": escalation.id,
        "kind": "budget",
        "reason": "budget hit",
    }
    assert rows["budget.reached"]["budget_usd"] == 2.0 and rows["budget.reached"]["escalation"] == escalation.id
    assert rows["escalation.assigned"]["assignee"] == "ada" and rows["escalation.assigned"]["run"] is None


def test_a_batch_without_a_webhook_queues_no_call_for_its_escalations(db):
    batch = Batch.objects.create(name="b", spec={})
    transitions.escalation_open(batch=batch, run=None, kind=Escalation.Kind.BUDGET, reason="budget hit")
    assert not WebhookDelivery.objects.exists()


def spend_every_try(row) -> None:
    """Let the delivery loop try `row` until it gives up (three tries an hour apart, each a 500)."""
    later = timezone.now()
    for _ in range(3):
        later += timedelta(hours=1)
        webhooks.deliver_due(now=later)
    row.refresh_from_db()
    assert row.state == "failed" and row.attempts == 3 and row.last_error == "HTTP 500"


def test_an_admin_redelivers_a_failed_call_and_the_receiver_gets_it(db, allow_loopback, receiver, django_user_model):
    hook = receiver(statuses=(500, 500, 500, 204))
    row = queued(hook.url)
    spend_every_try(row)

    viewer = django_user_model.objects.create_user("vic", password="pw-vic-12345")
    with pytest.raises(NotAllowed):
        services.webhook_redeliver(delivery_id=row.id, actor=viewer)
    row.refresh_from_db()
    assert row.state == "failed"

    admin = django_user_model.objects.create_superuser("ada", password="pw-ada-12345")
    services.webhook_redeliver(delivery_id=row.id, actor=admin)
    with pytest.raises(ActionRefused, match="already queued"):
        services.webhook_redeliver(delivery_id=row.id, actor=admin)
    assert webhooks.deliver_due() is True
    row.refresh_from_db()
    assert row.state == "delivered" and row.attempts == 1 and row.last_status == 204
    assert len(hook.requests) == 4 and hook.requests[3]["json"] == hook.requests[0]["json"]


def test_the_delivery_log_page_lists_calls_masked_and_redelivers_for_admins_only(db, client, django_user_model):
    row = queued("https://hooks.example.org/services/T000/B000/abcdef0123456789abcdef")
    WebhookDelivery.objects.filter(id=row.id).update(state="failed", attempts=6, last_error="HTTP 503")
    viewer = django_user_model.objects.create_user("vic", password="pw-vic-12345")
    client.force_login(viewer)
    assert client.get("/webhooks/").status_code == 403
    assert client.post(f"/webhooks/{row.id}/redeliver/").status_code == 403
    assert WebhookDelivery.objects.get(id=row.id).state == "failed"

    client.force_login(django_user_model.objects.create_superuser("ada", password="pw-ada-12345"))
    page = client.get("/webhooks/").content.decode()
    assert "hooks.example.org/services/T000/B000/***" in page and "abcdef0123456789abcdef" not in page
    assert "HTTP 503" in page and "batch.ended" in page and "Redeliver" in page
    assert "No webhook calls in state pending" in client.get("/webhooks/?state=pending").content.decode()
    response = client.post(f"/webhooks/{row.id}/redeliver/", follow=True)
    assert "is queued again" in response.content.decode()
    row.refresh_from_db()
    assert row.state == "pending" and row.attempts == 0


def readme_verify():
    """The verification example of the README's Webhooks section, as a function."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- webhook-verify:", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    return scope["verify"]


def test_the_readme_example_verifies_a_real_signed_call_and_refuses_a_changed_one(
    db, allow_loopback, receiver, monkeypatch
):
    monkeypatch.setenv("SPAWNER_WEBHOOK_SECRET", "shared-with-the-receiver")
    verify = readme_verify()
    hook = receiver()
    queued(hook.url)
    webhooks.deliver_due()
    request = hook.requests[0]
    assert verify("shared-with-the-receiver", request["body"], request["headers"])
    assert not verify("shared-with-the-receiver", request["body"].replace(b"1.5", b"9.5"), request["headers"])
    assert not verify("another-secret", request["body"], request["headers"])
    old = {**request["headers"], "Spawner-Timestamp": str(int(time.time()) - 301)}
    old["Spawner-Signature"] = signing.signature(
        "shared-with-the-receiver", int(old["Spawner-Timestamp"]), request["body"]
    )
    assert not verify("shared-with-the-receiver", request["body"], old)
    assert verify("shared-with-the-receiver", request["body"], old, tolerance=600)


# --- webhook_format: slack ------------------------------------------------------------------


def test_a_slack_format_batch_sends_a_text_body_for_each_event(db, allow_loopback, receiver, agent_types, tmp_path):
    hook = receiver()
    spec = HOOKED.format(url=hook.url) + "webhook_format: slack\n"
    batch = launch(spec, tmp_path)
    assert Batch.objects.get(id=batch.id).webhook_format == "slack"
    batch.status = "succeeded"
    webhooks.notify(batch, "batch.ended", {"wall_seconds": 1.25})
    escalation = transitions.escalation_open(batch=batch, run=None, kind=Escalation.Kind.BUDGET, reason="spent $2")
    webhooks.escalation_assigned(escalation, None)
    while webhooks.deliver_due():
        pass
    texts = sorted(r["json"]["text"] for r in hook.requests)
    assert texts == sorted(
        [
            f"Batch #{batch.id} w ended: succeeded (wall 1.2 s).",
            f"Batch #{batch.id} w needs a person: escalation #{escalation.id} (budget): spent $2",
            f"Batch #{batch.id} w reached its budget: spent $2",
            f"Batch #{batch.id} w: escalation #{escalation.id} unassigned.",
        ]
    )
    assert all(set(r["json"]) == {"text"} for r in hook.requests)
    assert all(
        signing.verify(
            webhooks.signing_secret(),
            r["body"],
            r["headers"]["Spawner-Timestamp"],
            r["headers"]["Spawner-Signature"],
            now=time.time(),
        )
        for r in hook.requests
    )


def test_an_unknown_webhook_format_is_a_spec_error_naming_the_field(db, agent_types):
    from spawner.errors import SpecInvalid

    with pytest.raises(SpecInvalid) as caught:
        services.spec_load(HOOKED.format(url="https://hooks.example.org/x") + "webhook_format: teams\n", is_admin=True)
    assert "webhook_format" in str(caught.value) and "slack" in str(caught.value)
    json_spec = services.spec_load(HOOKED.format(url="https://hooks.example.org/x"), is_admin=True)
    assert json_spec.webhook_format == "json"
