"""Small readers of URLs and query strings shared by the pages."""

from __future__ import annotations

from django.urls import reverse

from dashboard.ids import parse_id


def page_number(query) -> int:
    """The `page` query parameter, 1 when missing or not a number."""
    number = parse_id(query.get("page", "1"))
    return max(1, min(number or 1, 2**31))


def run_url_template() -> str:
    """The run page's URL with a hole for the id: reversing once beats reversing per row."""
    return reverse("run", args=[987654321]).replace("987654321", "{}")
