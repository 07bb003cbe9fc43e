from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import PermissionDenied

PROBLEM_TYPES = "/api/problems/"  # each problem type's page (dashboard.api.problem_pages)


def problem_type(slug: str) -> str:
    """The `type` URI of a problem details answer, the page that explains it: `/api/problems/<slug>`.
    The one spelling for the REST API (dashboard.api.problems) and the MCP endpoint (spawner.mcp.http)."""
    return PROBLEM_TYPES + slug


class ActionRefused(Exception):
    """The action does not apply to the object in its current state; the message says why."""


class CostUnconfirmed(ActionRefused):
    """A launch that needs a person's yes to its cost (spawner.core.budget.confirm_reason)."""

    def __init__(self, reason: str, cost: dict):
        super().__init__(reason)
        self.cost = cost


class NotAllowed(ActionRefused, PermissionDenied):
    """The actor lacks the permission the action needs (see `spawner.permissions`); the message says which.

    An ActionRefused, so callers that refuse with a message keep working; a PermissionDenied, so a view
    that does not catch it still answers 403.
    """


@dataclass(frozen=True)
class FieldError:
    """One thing wrong with a spec, as text (`where`) and as data (task index, task key, field, line)."""

    where: str  # "batch" or "task 'lint' (tasks[2], line 14)"
    field: str
    message: str
    task: str | None = None  # the task's key, when it has one
    index: int | None = None  # the task's position in `tasks`, from 0
    line: int | None = None  # in the spec's text, from 1: the task's line for a task's field
    at_line: int | None = None  # the line of the field itself, when known (a page points there)
    admin_only: bool = False  # wrong only because the actor is not an admin (an admin could launch it)

    def as_data(self) -> dict:
        """As the REST API's problem details and the MCP tools list it: task, index, field, line, message."""
        return {
            "task": self.task,
            "index": self.index,
            "field": self.field,
            "line": self.line,
            "message": self.message,
            "where": self.where,
        }

    def __str__(self) -> str:
        field_part = f"{self.field}: " if self.field else ""
        return f"{self.where}: {field_part}{self.message}"


class SpecInvalid(Exception):
    """A spec that cannot run: every error found, each naming its task, field and line."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))
