"""A batch's webhook address shows on its page, masked; escalation answers always find their card."""

from __future__ import annotations

import pytest

from dashboard.pages.webhook_url import masked
from spawner.models import Batch, Escalation


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://ci.example.com/hooks/spawner", "https://ci.example.com/hooks/spawner"),
        ("https://bot:s3cret@ci.example.com/h", "https://***@ci.example.com/h"),
        ("https://ci.example.com/h?token=abc123&team=x", "https://ci.example.com/h?token=***&team=***"),
        (
            "https://hooks.example.com/services/T000/B000/aB3dE5gH7jK9mN1pQ3",
            "https://hooks.example.com/services/T000/B000/***",
        ),
        ("https://ci.example.com/h#key", "https://ci.example.com/h#***"),
        ("http://[::1]:8080/h?k", "http://[::1]:8080/h?k=***"),
    ],
)
def test_credentials_in_a_webhook_address_are_masked(url, shown):
    assert masked(url) == shown


def test_the_batch_page_shows_the_webhook_masked(client, viewer, member, make_batch):
    batch = make_batch(member)
    Batch.objects.filter(id=batch.id).update(webhook_url="https://bot:pw-9@ci.example.com/h?token=tok-1234")
    client.force_login(viewer)  # anyone who may see the batch
    html = client.get(f"/batches/{batch.id}/").content.decode()
    assert "https://***@ci.example.com/h?token=***" in html
    assert "tok-1234" not in html and "pw-9" not in html
    assert "credentials and tokens are masked" in html


def test_a_batch_without_a_webhook_says_nothing_of_it(signed_in, member, make_batch):
    batch = make_batch(member)
    assert "Webhook:" not in signed_in.get(f"/batches/{batch.id}/").content.decode()


def test_escalation_answers_land_even_when_their_form_is_gone(signed_in, reviewed):
    """A live update may redraw the card (closed, without its forms) before the answer arrives; the
    page's script swaps such an answer against the page, where the card's new copy is (the browser
    journey in tests/browser/test_permissions.py holds an answer back to check it)."""
    escalation = Escalation.objects.get(batch=reviewed)
    html = signed_in.get("/escalations/").content.decode()
    assert '<script src="/static/escalations.js" defer></script>' in html
    card = html.split(f'id="escalation-{escalation.id}"', 1)[1].split("</article>", 1)[0]
    forms = [f.split(">", 1)[0] for f in card.split("<form")[1:]]
    assert len(forms) == 2 and all('hx-swap="none"' in f for f in forms), forms
    assert signed_in.get("/static/escalations.js").status_code == 200
