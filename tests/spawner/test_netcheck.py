"""Where webhooks may go: public addresses only, unless an admin allows the host."""

from __future__ import annotations

import pytest

from spawner.core import delivery
from spawner.core.netcheck import address_refusal, allow_list, url_problem


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::",
        "fe80::1%eth0",
    ],
)
def test_addresses_that_are_not_public_are_refused(address):
    assert address_refusal(address)


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address):
    assert address_refusal(address) == ""


@pytest.mark.parametrize(
    "url, why",
    [
        ("ftp://example.org/", "http(s)"),
        ("file:///etc/passwd", "http(s)"),
        ("gopher://example.org/", "http(s)"),
        ("http:///nohost", "no host"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::ffff:10.0.0.1]/", "private"),
        ("http://127.0.0.1:8000/hook", "loopback"),
        ("http://localhost/hook", "localhost"),
        ("http://example.org:99999/", "valid URL"),
    ],
)
def test_a_webhook_url_that_is_not_public_http_is_refused_before_any_lookup(url, why):
    assert why in url_problem(url)


def test_public_names_and_allowed_hosts_pass_the_url_check():
    assert url_problem("https://hooks.example.org/x?y=1") == ""
    assert url_problem("http://127.0.0.1:8000/hook", allow_list("127.0.0.1, hooks.internal")) == ""
    assert url_problem("http://[::1]:8000/", allow_list("[::1]")) == ""


def test_retries_back_off_then_give_up_and_refusals_are_final():
    kw = {"max_attempts": 4, "base": 2.0, "cap": 5.0}
    assert delivery.decide(delivery.Outcome(ok=True, status=204), 1, **kw) == (delivery.DELIVERED, 0.0)
    assert delivery.decide(delivery.Outcome(error="timeout"), 1, **kw) == (delivery.RETRY, 2.0)
    assert delivery.decide(delivery.Outcome(status=503), 2, **kw) == (delivery.RETRY, 4.0)
    assert delivery.decide(delivery.Outcome(status=503), 3, **kw) == (delivery.RETRY, 5.0)
    assert delivery.decide(delivery.Outcome(status=503), 4, **kw)[0] == delivery.FAILED
    assert delivery.decide(delivery.Outcome(status=404), 1, **kw)[0] == delivery.FAILED
    assert delivery.decide(delivery.Outcome(status=429), 1, **kw)[0] == delivery.RETRY
    assert delivery.decide(delivery.Outcome(error="refused", final=True), 1, **kw)[0] == delivery.FAILED
