"""Pass results forward: a task sees its dependencies' results in its prompt and in a file.

In a prompt, `{{ deps.KEY.summary }}`, `{{ deps.KEY.verdict }}`, `{{ deps.KEY.status }}`,
`{{ deps.KEY.result }}` (JSON), `{{ deps.KEY.output }}` (output tail), `{{ deps.KEY.output_file }}`
and `{{ deps.KEY.result_file }}` are filled at spawn time. SPAWNER_DEPS_FILE names a JSON file
with all of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

DEP_VAR = re.compile(r"\{\{\s*deps\.([A-Za-z0-9_.-]+?)\.([a-z_]+)\s*\}\}")


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


def render(prompt: str, deps: Mapping[str, Mapping[str, Any]]) -> str:
    """Fill `{{ deps.KEY.FIELD }}`; a reference to something unknown is left as it was."""

    def fill(match: re.Match) -> str:
        key, name = match.group(1), match.group(2)
        if key not in deps or name not in deps[key]:
            return match.group(0)
        value = deps[key][name]
        if isinstance(value, dict | list):
            return json.dumps(value, ensure_ascii=False)
        return "" if value is None else str(value)

    return DEP_VAR.sub(fill, prompt)
