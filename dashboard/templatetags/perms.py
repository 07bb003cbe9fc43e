"""What the reader may do, as the views and the live relay computed it (`spawner.permissions.page_may`):
`{% load perms %}{% if may|allows:"resolve launch" %}`; review comments as safe Markdown."""

from __future__ import annotations

from django import template

from dashboard.pages import comments, webhook_url
from spawner import permissions

register = template.Library()


@register.filter
def allows(may, needs: str) -> bool:
    return permissions.allows(may or {}, needs)


@register.filter
def refusal(may, needs: str) -> str:
    """Why the first right named in `needs` that is missing is refused ('' if none is)."""
    why = (may or {}).get("why", {})
    return next((why[name] for name in needs.split() if name in why), "")


@register.filter
def markdown(text: str):
    return comments.render(text)


@register.filter
def masked_url(url: str) -> str:
    """A webhook address with its credentials, query values and token-like path parts as ***."""
    return webhook_url.masked(url or "")


@register.filter
def retry_needs(run) -> str:
    return permissions.retry_needs(run)


@register.filter
def may_retry(may, run) -> bool:
    """Whether the reader (`may`) may retry `run` (spawner.permissions.retry_needs)."""
    return permissions.allows(may or {}, permissions.retry_needs(run))


@register.filter
def retry_refusal(may, run) -> str:
    return refusal(may, permissions.retry_needs(run))
