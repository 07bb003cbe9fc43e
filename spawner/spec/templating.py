"""Prompt templating, in one place: `{{ name }}` variables and `{{ deps.KEY.FIELD }}` hand-offs.

At launch, `{{ task }}`, `{{ key }}` and a task's `vars` are filled (`render_prompt`); references
to dependencies stay as they are until spawn time, when `render_deps` fills
`{{ deps.KEY.summary }}`, `{{ deps.KEY.verdict }}`, `{{ deps.KEY.status }}`, `{{ deps.KEY.result }}`
(JSON), `{{ deps.KEY.output }}` (output tail), `{{ deps.KEY.output_file }}` and
`{{ deps.KEY.result_file }}`. SPAWNER_DEPS_FILE names a JSON file with all of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

VAR_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")
DEPS = "deps."


class PromptTooLong(ValueError):
    """Filling the variables would make a prompt longer than allowed (or a variable is not text)."""


def render_prompt(template: str, variables: Mapping[str, Any], *, limit: int | None = None) -> tuple[str, list[str]]:
    """Fill {{ name }} from variables; {{ deps.* }} stays for spawn time. Returns (text, unknown).

    With `limit`, raises PromptTooLong as soon as the text would pass it: a short prompt that
    repeats a long variable must not take the server's memory.
    """
    unknown: list[str] = []
    size = len(template)

    def fill(match: re.Match) -> str:
        nonlocal size
        name = match.group(1)
        if name.startswith(DEPS):
            return match.group(0)
        if name not in variables:
            unknown.append(name)
            return match.group(0)
        raw = variables[name]
        if not isinstance(raw, str | int | float | bool) and raw is not None:
            raise PromptTooLong(
                f"uses {{{{ {name} }}}}, which is a list or mapping: only text and numbers fill a prompt"
            )
        if limit is not None and isinstance(raw, str) and size + len(raw) > limit:
            raise PromptTooLong(f"is over {limit} characters once its variables are filled")
        value = str(raw)
        size += len(value) - len(match.group(0))
        if limit is not None and size > limit:
            raise PromptTooLong(f"is over {limit} characters once its variables are filled")
        return value

    return VAR_RE.sub(fill, template), unknown


def dep_refs(prompt: str) -> tuple[str, ...]:
    """What a prompt references of its dependencies: `{{ deps.web.app.summary }}` gives 'web.app.summary'."""
    return tuple(name[len(DEPS) :] for name in VAR_RE.findall(prompt) if name.startswith(DEPS))


def dependency_view(
    *, status: str, result: Any, output_tail: str, output_file: str, result_file: str
) -> dict[str, Any]:
    summary = result.get("summary", "") if isinstance(result, dict) else ""
    verdict = result.get("verdict", "") if isinstance(result, dict) else ""
    return {
        "status": status,
        "summary": summary or output_tail[-2000:].strip(),
        "verdict": verdict,
        "result": result,
        "output": output_tail,
        "output_file": output_file,
        "result_file": result_file,
    }


def render_deps(prompt: str, deps: Mapping[str, Mapping[str, Any]]) -> str:
    """Fill `{{ deps.KEY.FIELD }}`; a reference to something unknown is left as it was."""

    def fill(match: re.Match) -> str:
        name = match.group(1)
        key, _, field = name[len(DEPS) :].rpartition(".")
        if not name.startswith(DEPS) or key not in deps or field not in deps[key]:
            return match.group(0)
        value = deps[key][field]
        if isinstance(value, dict | list):
            return json.dumps(value, ensure_ascii=False)
        return "" if value is None else str(value)

    return VAR_RE.sub(fill, prompt)
