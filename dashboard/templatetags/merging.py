"""The merge section of the batch page: `{% load merging %}{% merge_section batch %}`."""

from __future__ import annotations

from django import template

from dashboard.pages import merging

register = template.Library()


@register.inclusion_tag("dashboard/_merge_queue.html")
def merge_section(batch):
    return merging.merge_context(batch)
