"""The run page's output section (the log viewer), for the page and for its live updates."""

from __future__ import annotations

from django import template
from django.template.loader import render_to_string

from dashboard.pages import logs

register = template.Library()


def _current(run):
    return run.attempts.filter(number=run.attempt).first() if run.attempt else None


@register.simple_tag
def log_section(run):
    """The whole output section: the live tail of the current attempt."""
    return render_to_string("dashboard/_log.html#log-section", logs.section_context(run, _current(run)))


@register.simple_tag
def log_tail(run):
    """Only the live tail (what the websocket swaps in as the output grows)."""
    context = {**logs.section_context(run, _current(run)), "log_oob": True}  # the line count travels with it
    return render_to_string("dashboard/_log.html#tail", context)
