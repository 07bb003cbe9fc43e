"""Template variables: `${name}` in a saved batch template, filled at launch.

A template is a batch spec whose text values may hold `${name}` (letters, digits and `_`); `$${`
is a literal `${`. The spec's own `{{ … }}` (roles, `{{ deps.KEY.summary }}`) is left alone: it is
filled later, by the spec and at spawn time. Variables are filled in the *parsed* document, inside
its text values only, never in its keys: a value is always one scalar (or part of one), so no value
can add a field, a task, an anchor or a line of YAML, whatever it holds. A value that is a whole
field and a whole number (`max_parallel: ${slots}` with `4`) becomes that number.

Pure: the standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
PLACEHOLDER_RE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
WHOLE_NUMBER_RE = re.compile(r"-?[0-9]{1,12}")
MAX_VARIABLES = 50
MAX_VALUE_CHARS = 10_000


class TemplateError(ValueError):
    """What is wrong with a template or the values given to it: `field` names where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_declarations(text: str) -> dict[str, str | None]:
    """`name=default` or `name` (required), one a line, into {name: default or None}."""
    found: dict[str, str | None] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, eq, default = line.partition("=")
        name = name.strip()
        if not NAME_RE.fullmatch(name):
            raise TemplateError("variables", f"line {number}: {name!r} is not a name (letters, digits, _)")
        if name in found:
            raise TemplateError("variables", f"line {number}: {name!r} is declared twice")
        found[name] = default.strip() if eq else None
    if len(found) > MAX_VARIABLES:
        raise TemplateError("variables", f"at most {MAX_VARIABLES} variables")
    return found


def declarations_text(declared: Mapping[str, str | None]) -> str:
    return "\n".join(name if default is None else f"{name}={default}" for name, default in declared.items())


def names_used(data: Any) -> set[str]:
    """Every `${name}` in the document's text values; raises for one in a key or a bad name."""
    used: set[str] = set()

    def scan(text: str, where: str) -> None:
        for match in PLACEHOLDER_RE.finditer(text):
            if match.group(0) == "$${":
                continue
            name = match.group(1)
            if not NAME_RE.fullmatch(name):
                raise TemplateError(where, f"${{{name}}} is not a variable name (letters, digits, _)")
            used.add(name)

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and "${" in key.replace("$${", ""):
                    raise TemplateError(f"{where}{key}", "a variable may fill a value, never a field's name")
                walk(value, f"{where}{key}.")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}{i}.")
        elif isinstance(node, str):
            scan(node, where.rstrip(".") or "spec")

    walk(data, "")
    return used


def check_value(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TemplateError(name, "a value is text")
    if len(value) > MAX_VALUE_CHARS:
        raise TemplateError(name, f"is over {MAX_VALUE_CHARS} characters")
    if any((ord(c) < 32 and c not in "\n\t") or c == "\x7f" for c in value):
        raise TemplateError(name, "contains a control character")
    return value


def resolve(declared: Mapping[str, str | None], given: Mapping[str, Any]) -> dict[str, str]:
    """The values to fill: the given ones over the defaults. Raises for an undeclared name or a
    required variable left empty."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise TemplateError(unknown[0], f"is not a variable of this template (it has: {', '.join(declared) or 'none'})")
    values: dict[str, str] = {}
    for name, default in declared.items():
        value = given.get(name)
        if value is None or value == "":
            if default is None:
                raise TemplateError(name, "is required")
            value = default
        values[name] = check_value(name, value)
    return values


def fill(data: Any, values: Mapping[str, str]) -> Any:
    """The document with every `${name}` in its text values replaced (a copy)."""

    def text(node: str) -> Any:
        whole = PLACEHOLDER_RE.fullmatch(node)
        if whole and whole.group(0) != "$${" and WHOLE_NUMBER_RE.fullmatch(values.get(whole.group(1), "")):
            return int(values[whole.group(1)])

        def one(match: re.Match) -> str:
            if match.group(0) == "$${":
                return "${"
            name = match.group(1)
            if name not in values:
                raise TemplateError(name, "is used but not declared")
            return values[name]

        return PLACEHOLDER_RE.sub(one, node)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        if isinstance(node, str):
            return text(node)
        return node

    return walk(data)
