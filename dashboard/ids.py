"""Database ids in URLs and query strings: ASCII digits within the 64-bit range the database stores.

A bigger number is not an id of anything: a path with one is not found (404, or a websocket closed
with a code the page does not retry) and a filter with one is ignored, instead of the database
driver failing on it.
"""

from __future__ import annotations

import re

from django.urls import register_converter

MAX_ID = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")


def parse_id(text: str | None) -> int | None:
    """The id in `text`, or None if it is not one."""
    if text is None or not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if value <= MAX_ID else None


class IdConverter:
    """`<id:name>` in routes: like `<int:name>`, without numbers the database cannot hold."""

    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = parse_id(value)
        if number is None:
            raise ValueError(f"{value} is not an id")  # the route does not match
        return number

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(IdConverter, "id")
