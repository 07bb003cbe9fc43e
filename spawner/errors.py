from __future__ import annotations

from django.core.exceptions import PermissionDenied


class ActionRefused(Exception):
    """The action does not apply to the object in its current state; the message says why."""


class NotAllowed(ActionRefused, PermissionDenied):
    """The actor lacks the permission the action needs (see `spawner.permissions`); the message says which.

    An ActionRefused, so callers that refuse with a message keep working; a PermissionDenied, so a view
    that does not catch it still answers 403.
    """
