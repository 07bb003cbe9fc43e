"""The merge section of the batch page: `{% load merging %}{% merge_section batch %}`."""

from __future__ import annotations

from django import template

from dashboard.pages import merging

register = template.Library()


@register.inclusion_tag("dashboard/_merge_queue.html", takes_context=True)
def merge_section(context, batch):
    return merging.merge_context(batch, context.get("may"))
