"""Field readers for the batch spec: each checks one value and says what is wrong with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    where: str  # "batch" or "task 'lint' (tasks[2], line 14)"
    field: str
    message: str
    task: str | None = None

    def __str__(self) -> str:
        field_part = f"{self.field}: " if self.field else ""
        return f"{self.where}: {field_part}{self.message}"


class SpecInvalid(Exception):
    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class Collector:
    """Gathers every error of a spec, so the user sees them all at once."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, where: str, field_name: str, message: str, task: str | None = None) -> None:
        self.errors.append(FieldError(where, field_name, message, task))


def as_int(c: Collector, where: str, name: str, value: Any, lo: int, hi: int, task=None) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        c.add(where, name, f"must be a whole number, got {value!r}", task)
        return None
    if not lo <= value <= hi:
        c.add(where, name, f"must be between {lo} and {hi}, got {value}", task)
        return None
    return value


def as_number(c: Collector, where: str, name: str, value: Any, lo: float, hi: float, task=None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        c.add(where, name, f"must be a number, got {value!r}", task)
        return None
    if not lo <= value <= hi:
        c.add(where, name, f"must be between {lo} and {hi}, got {value}", task)
        return None
    return float(value)


def as_str_list(c: Collector, where: str, name: str, value: Any, task=None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        c.add(where, name, f"must be a list of non-empty strings, got {value!r}", task)
        return ()
    return tuple(value)


def as_choice(c: Collector, where: str, name: str, value: Any, choices, task=None) -> str | None:
    if value not in choices:
        c.add(where, name, f"must be one of {', '.join(choices)}; got {value!r}", task)
        return None
    return value
