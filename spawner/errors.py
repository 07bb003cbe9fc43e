from __future__ import annotations


class ActionRefused(Exception):
    """The action does not apply to the object in its current state; the message says why."""
