"""Fuzzing the new-batch page: any posted spec or form gives a page with clear errors or a launch, never a 500."""

from __future__ import annotations

from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests import hostile_specs

ANSWERS = {200, 302, 400}
# pytest keeps every log record of a test until it ends, and a refused post (e.g. a body over the
# upload limit) is logged with its traceback, which holds the request: one hypothesis test of 2,000
# examples grew past 8 GB and its garbage collection made one request take 80 s. 500 examples stay
# well within memory (without pytest's log capture no request outlives its response); the same
# hostile documents run 2,000 times against the spec reader itself (tests/spawner/test_spec_fuzz.py).
PAGE_EXAMPLES = settings(max_examples=min(500, settings.default.max_examples))

field_value = st.one_of(hostile_specs.short_text, hostile_specs.glob, hostile_specs.long_text).map(
    hostile_specs.without_surrogates
)


@PAGE_EXAMPLES
@given(text=hostile_specs.documents, action=st.sampled_from(["plan", "launch"]))
def test_any_posted_spec_gets_an_answer_not_a_server_error(signed_in, agent_types, text, action):
    response = signed_in.post(
        "/batches/new/", {"source": "yaml", "action": action, "spec_text": hostile_specs.without_surrogates(text)}
    )
    assert response.status_code in ANSWERS
    event(f"{action}: {response.status_code}")


@PAGE_EXAMPLES
@given(
    action=st.sampled_from(["plan", "launch"]),
    name=field_value,
    rows=st.lists(
        st.fixed_dictionaries(
            {"key": field_value, "prompt": field_value, "depends_on": field_value, "files": field_value}
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_any_posted_form_gets_an_answer_not_a_server_error(signed_in, agent_types, action, name, rows):
    data = {
        "source": "form",
        "action": action,
        "name": name,
        "mode": "parallel",
        "max_parallel": "3",
        "retries": "0",
        "timeout": "",
        "failure_policy": "continue",
        "aggregation": "",
        "rows": [f"t{n}" for n in range(len(rows))],
    }
    for n, row in enumerate(rows):
        data.update({f"t{n}-{field}": value for field, value in {"agent": "sh", "priority": "P1", **row}.items()})
    response = signed_in.post("/batches/new/", data)
    assert response.status_code in ANSWERS
    event(f"{action}: {response.status_code}")
