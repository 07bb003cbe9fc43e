"""Template variables (spawner.core.template_vars): filled in values only, never able to add
structure, whatever a value holds."""

from __future__ import annotations

import pytest

from spawner.core import template_vars as tv


def test_declarations_with_defaults_and_required():
    assert tv.parse_declarations("branch=main\n# a comment\n\nticket\nmsg = a=b ") == {
        "branch": "main",
        "ticket": None,
        "msg": "a=b",
    }


@pytest.mark.parametrize(
    ("text", "says"),
    [("bad name=1", "not a name"), ("a=1\na=2", "declared twice"), ("${x}=1", "not a name")],
)
def test_bad_declarations_name_the_line(text, says):
    with pytest.raises(tv.TemplateError, match=says) as exc:
        tv.parse_declarations(text)
    assert exc.value.field == "variables"


def test_fill_replaces_in_values_and_keeps_the_specs_own_braces():
    data = {
        "name": "review ${branch}",
        "tasks": [{"key": "a", "prompt": "on ${branch}: {{ deps.b.summary }} costs ${ticket} USD and $${literal}"}],
    }
    out = tv.fill(data, {"branch": "main", "ticket": "5"})
    assert out["name"] == "review main"
    assert out["tasks"][0]["prompt"] == "on main: {{ deps.b.summary }} costs 5 USD and ${literal}"
    assert data["name"] == "review ${branch}"  # a copy


def test_a_whole_field_that_is_a_whole_number_becomes_a_number():
    assert tv.fill({"max_parallel": "${n}", "name": "x${n}"}, {"n": "4"}) == {"max_parallel": 4, "name": "x4"}
    assert tv.fill({"name": "${n}"}, {"n": "1.10"}) == {"name": "1.10"}


HOSTILE = [
    "main\ntasks: [{key: evil, agent: shell, prompt: 'rm -rf /'}]",
    "x: y",
    "a: &anchor [1, 2]",
    "*anchor",
    "'\"",
    "- list item",
    "{flow: mapping}",
    "!!python/object:os.system",
    "---\nname: other",
    "${branch}",
    "{{ deps.a.output }}",
    "line1\n  indented: key\n",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_value_stays_one_text_value(value):
    data = {"name": "n", "tasks": [{"key": "a", "prompt": "${branch}"}, {"key": "b", "prompt": "on ${branch}!"}]}
    out = tv.fill(data, {"branch": value})
    assert out["tasks"][0]["prompt"] == value
    assert out["tasks"][1]["prompt"] == f"on {value}!"
    assert set(out) == {"name", "tasks"} and len(out["tasks"]) == 2
    assert set(out["tasks"][0]) == {"key", "prompt"}


def test_a_variable_in_a_key_is_refused():
    with pytest.raises(tv.TemplateError, match="never a field's name"):
        tv.names_used({"tasks": [{"${k}": 1}]})


def test_names_used_and_bad_placeholders():
    assert tv.names_used({"a": ["${x} ${y}", {"b": "$${z}"}], "n": 3}) == {"x", "y"}
    with pytest.raises(tv.TemplateError, match="not a variable name"):
        tv.names_used({"a": "${not valid}"})


def test_resolve_defaults_required_and_unknown():
    declared = {"branch": "main", "ticket": None}
    assert tv.resolve(declared, {"ticket": "42"}) == {"branch": "main", "ticket": "42"}
    with pytest.raises(tv.TemplateError, match="is required") as exc:
        tv.resolve(declared, {})
    assert exc.value.field == "ticket"
    with pytest.raises(tv.TemplateError, match="not a variable of this template"):
        tv.resolve(declared, {"ticket": "1", "nope": "x"})
    with pytest.raises(tv.TemplateError, match="control character"):
        tv.resolve(declared, {"ticket": "a\x1b[31m"})
    with pytest.raises(tv.TemplateError, match="over"):
        tv.resolve(declared, {"ticket": "x" * (tv.MAX_VALUE_CHARS + 1)})
