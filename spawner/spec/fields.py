"""Field readers for the batch spec: each checks one value and says what is wrong with it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from spawner.errors import FieldError, SpecInvalid  # noqa: F401 - the spec's errors, defined with the others


@dataclass(frozen=True)
class Where:
    """A task's place in the spec; reads as "task 'lint' (tasks[2], line 14)"."""

    index: int
    task: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        place = f"tasks[{self.index}]" + (f", line {self.line}" if self.line else "")
        return f"task '{self.task}' ({place})" if self.task else place


def shown(value: Any, limit: int = 80) -> str:
    """A value as it appears in a message: its repr, cut short (a message must stay readable)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "…" + text[-4:]


class Collector:
    """Gathers every error of a spec, so the user sees them all at once."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(
        self, where: str | Where, field_name: str, message: str, task: str | None = None, *, admin_only: bool = False
    ) -> None:
        """One error; `admin_only` when it is wrong only because the actor is not an admin."""
        if isinstance(where, Where):
            error = FieldError(str(where), field_name, message, task or where.task, where.index, where.line)
        else:
            error = FieldError(where, field_name, message, task)
        self.errors.append(dataclasses.replace(error, admin_only=admin_only) if admin_only else error)


def as_int(c: Collector, where: str | Where, name: str, value: Any, lo: int, hi: int, task=None) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        c.add(where, name, f"must be a whole number, got {shown(value)}", task)
        return None
    if not lo <= value <= hi:
        c.add(where, name, f"must be between {lo} and {hi}, got {shown(value)}", task)
        return None
    return value


def as_number(c: Collector, where: str | Where, name: str, value: Any, lo: float, hi: float, task=None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        c.add(where, name, f"must be a number, got {shown(value)}", task)
        return None
    if not lo <= value <= hi:
        c.add(where, name, f"must be between {lo} and {hi}, got {shown(value)}", task)
        return None
    return float(value)


def as_str_list(c: Collector, where: str | Where, name: str, value: Any, task=None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        c.add(where, name, f"must be a list of non-empty strings, got {shown(value)}", task)
        return ()
    return tuple(value)


def as_choice(c: Collector, where: str | Where, name: str, value: Any, choices, task=None) -> str | None:
    if value not in choices:
        c.add(where, name, f"must be one of {', '.join(choices)}; got {shown(value)}", task)
        return None
    return value
