"""Webhook signatures (spawner.core.signing): pure functions, no Django."""

from __future__ import annotations

import hashlib
import hmac

from spawner.core import signing

SECRET = "s3cret-for-tests"
BODY = b'{"event": "batch.ended", "batch": 7}'
NOW = 1_764_130_000


def signed(body=BODY, secret=SECRET, at=NOW):
    h = signing.headers(secret, body, at)
    return h["Spawner-Timestamp"], h["Spawner-Signature"]


def test_the_signature_is_an_hmac_sha256_of_timestamp_dot_body():
    stamp, sent = signed()
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert stamp == str(NOW) and sent == f"v1={expected}"
    assert signing.problem(SECRET, BODY, stamp, sent, now=NOW + 10) == ""


def test_a_tampered_body_does_not_verify():
    stamp, sent = signed()
    assert signing.problem(SECRET, BODY.replace(b"7", b"8"), stamp, sent, now=NOW) == "the signature does not match"


def test_a_tampered_timestamp_does_not_verify():
    _, sent = signed()
    assert signing.problem(SECRET, BODY, str(NOW + 1), sent, now=NOW) == "the signature does not match"


def test_a_wrong_secret_does_not_verify():
    stamp, sent = signed(secret="another")
    assert not signing.verify(SECRET, BODY, stamp, sent, now=NOW)


def test_an_old_timestamp_beyond_the_tolerance_is_refused_even_when_signed_right():
    stamp, sent = signed(at=NOW - 301)
    assert "more than 300 s" in signing.problem(SECRET, BODY, stamp, sent, now=NOW)
    assert signing.verify(SECRET, BODY, stamp, sent, now=NOW, tolerance=600)
    stamp, sent = signed(at=NOW + 301)  # from the future too
    assert not signing.verify(SECRET, BODY, stamp, sent, now=NOW)


def test_missing_or_garbled_headers_are_refused_with_a_reason():
    stamp, sent = signed()
    assert signing.problem(SECRET, BODY, "", sent, now=NOW) == "the timestamp is missing or not a number"
    assert signing.problem(SECRET, BODY, stamp, "", now=NOW) == "no v1 signature"
    assert signing.problem(SECRET, BODY, stamp, "v0=abc", now=NOW) == "no v1 signature"


def test_one_of_several_signatures_may_match_while_a_secret_is_rotated():
    stamp, sent = signed()
    _, old = signed(secret="old")
    assert signing.verify(SECRET, BODY, stamp, f"{old}, {sent}", now=NOW)


def test_the_derived_secret_is_hkdf_sha256_of_the_secret_key_and_differs_per_key():
    prk = hmac.new(b"spawner-webhook-signing", b"key-one", hashlib.sha256).digest()
    assert signing.derive_secret("key-one") == hmac.new(prk, b"webhook v1\x01", hashlib.sha256).hexdigest()
    assert signing.derive_secret("key-one") != signing.derive_secret("key-two")
    assert "key-one" not in signing.derive_secret("key-one")
