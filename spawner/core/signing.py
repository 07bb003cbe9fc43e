"""Signatures on webhook calls, so a receiver can tell a call came from this server, unchanged.

Each call carries two headers:

    Spawner-Timestamp: 1764130000            (Unix seconds when it was sent)
    Spawner-Signature: v1=<hex>              (HMAC-SHA256 of "<timestamp>.<body>" with the secret)

A receiver recomputes the HMAC over the timestamp header, a dot and the raw body bytes, compares in
constant time, and refuses a timestamp older (or newer) than a tolerance, so a captured call
cannot be replayed later.

The secret is SPAWNER_WEBHOOK_SECRET. When it is unset it is derived from the server's SECRET_KEY
(`derive_secret`): HMAC-SHA256 with the fixed salt "spawner-webhook-signing" as the key over the
SECRET_KEY (extract), then HMAC-SHA256 with that result as the key over b"webhook v1" + b"\\x01"
(expand), as in HKDF (RFC 5869) with one output block. The result, in hex, is the secret.
"""

from __future__ import annotations

import hashlib
import hmac

VERSION = "v1"
TIMESTAMP_HEADER = "Spawner-Timestamp"
SIGNATURE_HEADER = "Spawner-Signature"
DEFAULT_TOLERANCE_SECONDS = 300
SALT = b"spawner-webhook-signing"
INFO = b"webhook v1"


def derive_secret(secret_key: str) -> str:
    """The signing secret derived from a server's SECRET_KEY (HKDF-SHA256, one block, in hex)."""
    prk = hmac.new(SALT, secret_key.encode(), hashlib.sha256).digest()
    return hmac.new(prk, INFO + b"\x01", hashlib.sha256).hexdigest()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`v1=<hex>`: HMAC-SHA256 of b"<timestamp>." + body, keyed with the secret."""
    mac = hmac.new(secret.encode(), str(int(timestamp)).encode() + b"." + body, hashlib.sha256)
    return f"{VERSION}={mac.hexdigest()}"


def headers(secret: str, body: bytes, now: float) -> dict[str, str]:
    """The two headers to send with `body` at time `now` (Unix seconds)."""
    timestamp = int(now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp, body)}


def problem(
    secret: str, body: bytes, timestamp: str, sent: str, *, now: float, tolerance: float = DEFAULT_TOLERANCE_SECONDS
) -> str:
    """Why a received call does not verify; "" when it does.

    `timestamp` and `sent` are the values of the Spawner-Timestamp and Spawner-Signature headers
    (the latter may list several `v1=` values separated by commas, e.g. while a secret is rotated).
    """
    try:
        stamp = int(timestamp)
    except (TypeError, ValueError):
        return "the timestamp is missing or not a number"
    if abs(now - stamp) > tolerance:
        return f"the timestamp is {abs(now - stamp):.0f} s away from now (more than {tolerance:.0f} s)"
    expected = signature(secret, stamp, body)
    offered = [part.strip() for part in (sent or "").split(",") if part.strip().startswith(f"{VERSION}=")]
    if not offered:
        return f"no {VERSION} signature"
    if not any(hmac.compare_digest(expected, value) for value in offered):
        return "the signature does not match"
    return ""


def verify(secret: str, body: bytes, timestamp: str, sent: str, *, now: float, tolerance: float = 300) -> bool:
    return not problem(secret, body, timestamp, sent, now=now, tolerance=tolerance)
