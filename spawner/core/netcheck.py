"""Where a webhook may go: public http(s) addresses only, unless an admin allows a host.

Refused: loopback, private, link-local (169.254.169.254, the cloud metadata service),
shared (100.64/10), multicast, reserved and unspecified addresses, IPv4 and IPv6, and
IPv4 addresses wrapped in IPv6 (::ffff:127.0.0.1, 64:ff9b::/96, 6to4, Teredo).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

SCHEMES = ("http", "https")


def allow_list(text: str | Iterable[str]) -> frozenset[str]:
    """Hosts from a comma-separated setting, lower-cased, without brackets."""
    items = text.split(",") if isinstance(text, str) else text
    return frozenset(h.strip().lower().strip("[]") for h in items if h.strip())


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    if ip in ipaddress.ip_network("64:ff9b::/96"):  # NAT64 reaches the IPv4 address in the low bits
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(address: str) -> str:
    """Why a webhook may not connect to this IP address; "" if it may."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    inner = _embedded_v4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    if inner is not None and (why := address_refusal(str(inner))):
        return f"{address} wraps {inner}: {why}"
    for flag in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(ip, f"is_{flag}"):
            return f"{address} is a {flag.replace('_', '-')} address"
    if not ip.is_global:
        return f"{address} is not a public address"
    return ""


def host_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def url_problem(url: str, allow: frozenset[str] = frozenset()) -> str:
    """What is wrong with a webhook URL before any lookup: its scheme, a missing host, a literal
    address that is not public, or localhost. "" if nothing (DNS is checked at delivery)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        return f"is not a valid URL: {exc}"
    if parts.scheme.lower() not in SCHEMES:
        return f"must be an http(s) URL, got scheme {parts.scheme!r}" if parts.scheme else "must be an http(s) URL"
    host = (parts.hostname or "").lower()
    if not host:
        return "has no host"
    if host in allow:
        return ""
    if host == "localhost" or host.endswith(".localhost"):
        return f"may not target {host} (not a public address)"
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return ""  # a name: resolved and checked when it is delivered
    if why := address_refusal(host):
        return f"may not target {why}"
    return ""
