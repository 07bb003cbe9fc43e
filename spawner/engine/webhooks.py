"""Tell an outside URL when a batch ends, escalates or waits for review.

An outbox: `notify` writes a WebhookDelivery row in the transaction of the change it reports;
the cluster's delivery loop (a thread of `spawner_cluster`, never an agent's worker) sends due
rows with a short timeout and retries with backoff. A slow, dead or refused webhook never holds
an agent slot or blocks a batch, and pending deliveries survive a restart.

Only public addresses are called (see spawner.core.netcheck), checked after the DNS lookup and
then connected to as checked, so a name cannot resolve to something else in between; redirects
are not followed. Hosts in SPAWNER_WEBHOOK_ALLOW_HOSTS are exempt.

Every call is signed (spawner.core.signing) with the server's secret: SPAWNER_WEBHOOK_SECRET, or
one derived from SECRET_KEY when that is unset. The secret is read from the environment at each
send, never stored in the database and never shown.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import threading
import time
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import DatabaseError, connections
from django.utils import timezone

from spawner.core import delivery, netcheck, signing
from spawner.models import WebhookDelivery

log = logging.getLogger(__name__)
State = WebhookDelivery.State


def conf(name: str):
    return settings.SPAWNER[name]


def _queue(batch, kind: str, data: dict, *, url: str, fmt: str, recipient=None) -> WebhookDelivery:
    payload = {"event": kind, "batch": batch.id, "name": batch.name, "status": batch.status, **data}
    if fmt == "slack":
        payload = {"text": delivery.slack_text(payload)}
    return WebhookDelivery.objects.create(
        batch_id=batch.id,
        event=kind,
        url=url,
        payload=payload,
        next_attempt_at=timezone.now(),
        recipient=recipient,
    )


def notify(batch, kind: str, data: dict) -> WebhookDelivery | None:
    """Queue a call to the batch's webhook (call inside the transaction that makes the change)."""
    if not batch.webhook_url:
        return None
    return _queue(batch, kind, data, url=batch.webhook_url, fmt=getattr(batch, "webhook_format", "json"))


def notify_person(person, batch, kind: str, data: dict) -> WebhookDelivery | None:
    """Queue a call to a person's own notification webhook (PersonalWebhook), if they set one."""
    from spawner.models import PersonalWebhook

    if person is None:
        return None
    own = PersonalWebhook.objects.filter(user_id=person.id).first()
    if own is None or not own.url:
        return None
    return _queue(batch, kind, data, url=own.url, fmt=own.format, recipient=person)


def escalation_assigned(escalation, assignee) -> list[WebhookDelivery]:
    """Queue `escalation.assigned` to the escalation's batch's webhook and to the assignee's own
    notification webhook (theirs only: the call tells them it is now theirs)."""
    data = {
        "escalation": escalation.id,
        "kind": escalation.kind,
        "run": escalation.run_id,
        "assignee": assignee.get_username() if assignee else None,
    }
    queued = [notify(escalation.batch, "escalation.assigned", data)]
    queued.append(notify_person(assignee, escalation.batch, "escalation.assigned", {**data, "to_you": True}))
    return [d for d in queued if d is not None]


def review_requested(batch, data: dict, reviewers) -> list[WebhookDelivery]:
    """Queue `review.requested` to the batch's webhook and to each reviewer's own notification
    webhook (`"to_you": true`); `engine.fanin.review_request` decides when and to whom."""
    queued = [notify(batch, "review.requested", data)]
    queued += [notify_person(person, batch, "review.requested", {**data, "to_you": True}) for person in reviewers]
    return [d for d in queued if d is not None]


def budget_reached(batch, *, escalation: int, reason: str) -> WebhookDelivery | None:
    """Queue `budget.reached` (alongside the budget escalation's `escalation.opened`)."""
    data = {"escalation": escalation, "budget_usd": batch.budget_usd, "reason": reason}
    return notify(batch, "budget.reached", data)


def requeue(delivery_id: int, actor=None) -> bool:
    """Send a delivered or failed call again, from a fresh count of tries, recording who asked and
    when; False if it is still queued."""
    now = timezone.now()
    who = actor if actor is not None and actor.is_authenticated else None
    return bool(
        WebhookDelivery.objects.filter(id=delivery_id)
        .exclude(state=State.PENDING)
        .update(
            state=State.PENDING,
            attempts=0,
            next_attempt_at=now,
            delivered_at=None,
            updated_at=now,
            redelivered_by=who,
            redelivered_at=now,
        )
    )


def signing_secret() -> str:
    """SPAWNER_WEBHOOK_SECRET, else the secret derived from SECRET_KEY (see spawner.core.signing)."""
    return os.environ.get("SPAWNER_WEBHOOK_SECRET") or signing.derive_secret(settings.SECRET_KEY)


# --- sending --------------------------------------------------------------------------------


def send(url: str, payload: dict, *, allow: frozenset[str], timeout: float) -> delivery.Outcome:
    """One POST, to a checked address, no redirects. Never raises for the network's reasons."""
    if problem := netcheck.url_problem(url, allow):
        return delivery.Outcome(error=f"refused: the URL {problem}", final=True)
    parts = urlsplit(url)
    host, https = parts.hostname.lower(), parts.scheme.lower() == "https"
    port = parts.port or (443 if https else 80)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return delivery.Outcome(error=f"cannot resolve {host}: {exc}")
    addresses = list(dict.fromkeys(info[4][0] for info in found))
    if host not in allow:
        for address in addresses:
            if why := netcheck.address_refusal(address):
                return delivery.Outcome(error=f"refused: {host} resolves to {why}", final=True)
    if not addresses:
        return delivery.Outcome(error=f"cannot resolve {host}")
    connection = (http.client.HTTPSConnection if https else http.client.HTTPConnection)(host, port, timeout=timeout)
    # Connect to the address just checked, not to whatever the name resolves to next (DNS
    # rebinding); TLS still verifies the certificate against the host name.
    connection._create_connection = lambda addr, timeout=None, source_address=None: socket.create_connection(
        (addresses[0], addr[1]), timeout, source_address
    )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "spawner-webhook"}
    headers.update(signing.headers(signing_secret(), body, time.time()))
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        status, location = response.status, response.getheader("Location", "")
    except (OSError, http.client.HTTPException) as exc:
        return delivery.Outcome(error=f"{type(exc).__name__}: {exc}"[:500])
    finally:
        connection.close()
    if status < 300:
        return delivery.Outcome(ok=True, status=status)
    if status < 400:
        why = f"HTTP {status}: redirect to {location[:200]!r} not followed"
        return delivery.Outcome(status=status, error=why, final=True)
    return delivery.Outcome(status=status, error=f"HTTP {status}")


# --- the delivery loop ----------------------------------------------------------------------


def deliver_due(now=None) -> bool:
    """One step: claim the oldest due delivery, send it, record the outcome. False if none was due."""
    now = now or timezone.now()
    row = WebhookDelivery.objects.filter(state=State.PENDING, next_attempt_at__lte=now).order_by("next_attempt_at")
    row = row.only("id", "attempts", "url", "payload").first()
    if row is None:
        return False
    timeout = conf("WEBHOOK_TIMEOUT_SECONDS")
    # The claim pushes the row forward by a lease: if this cluster dies mid-send, it is due again.
    attempts = row.attempts + 1
    claimed = WebhookDelivery.objects.filter(id=row.id, state=State.PENDING, attempts=row.attempts).update(
        attempts=attempts, next_attempt_at=now + timedelta(seconds=4 * timeout + 30), updated_at=now
    )
    if not claimed:
        return True  # another cluster took it; look again
    outcome = send(row.url, row.payload, allow=netcheck.allow_list(conf("WEBHOOK_ALLOW_HOSTS")), timeout=timeout)
    verdict, delay = delivery.decide(
        outcome,
        attempts,
        max_attempts=conf("WEBHOOK_ATTEMPTS"),
        base=conf("WEBHOOK_BACKOFF_SECONDS"),
        cap=conf("WEBHOOK_BACKOFF_MAX_SECONDS"),
    )
    done = timezone.now()
    fields = {"last_status": outcome.status, "last_error": outcome.error, "updated_at": done}
    if verdict == delivery.DELIVERED:
        fields.update(state=State.DELIVERED, delivered_at=done)
    elif verdict == delivery.FAILED:
        fields.update(state=State.FAILED)
        log.warning("webhook #%s to %s failed after %d tries: %s", row.id, row.url, attempts, outcome.error)
    else:
        fields.update(next_attempt_at=done + timedelta(seconds=delay))
    WebhookDelivery.objects.filter(id=row.id, state=State.PENDING, attempts=attempts).update(**fields)
    return True


def delivery_loop(stop: threading.Event) -> None:
    """Deliver until `stop` is set; sleeps only when nothing is due. Runs in its own thread."""
    try:
        while not stop.is_set():
            try:
                found = deliver_due()
            except DatabaseError:
                log.exception("webhook delivery step failed; trying again")
                connections.close_all()
                found = False
            except Exception:  # the loop must outlive any one bad row
                log.exception("webhook delivery step failed; trying again")
                found = False
            if not found:
                stop.wait(conf("WEBHOOK_POLL_SECONDS"))
    finally:
        connections.close_all()


def start_delivery_thread() -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=delivery_loop, args=(stop,), name="spawner-webhooks", daemon=True)
    thread.start()
    return thread, stop
