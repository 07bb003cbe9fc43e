"""Fuzzing the spec reader: any document gives a valid spec or clear field errors, within a second."""

from __future__ import annotations

from hypothesis import event, given

from spawner import spec
from spawner.core import planning
from spawner.spec import AgentInfo, FieldError, SpecInvalid
from tests import hostile_specs

AGENTS = {"sh": AgentInfo("sh"), "codex": AgentInfo("codex", available=False, reason="not on PATH")}
ROLES = {"reviewer": "Review {{ task }} for {{ repo }}"}


@given(hostile_specs.documents)
def test_any_document_is_a_valid_spec_or_clear_field_errors(text):
    try:
        batch_spec = spec.load(text, agents=AGENTS, roles=ROLES)
    except SpecInvalid as exc:
        assert exc.errors and all(isinstance(e, FieldError) and e.message for e in exc.errors)
        assert all(e.index is None or isinstance(e.index, int) for e in exc.errors)
        str(exc).encode("utf-8", "surrogatepass")
        event(f"refused: {exc.errors[0].message[:24]}")
        return
    event("a valid spec")
    # What would be stored is storable: valid UTF-8 text, and a plan can be made of it.
    batch_spec.name.encode("utf-8")
    for t in batch_spec.tasks:
        (t.key + t.prompt + t.cwd + "".join(t.files)).encode("utf-8")
    planning.make_plan(batch_spec.plan_tasks(), max_parallel=batch_spec.max_parallel, sequential=False, aggregation="")
