"""Hostile specs: every one is refused with a clear error naming the field, never a crash or a long wait."""

from __future__ import annotations

import json
import time

import pytest

from spawner import spec
from spawner.spec import AgentInfo, FieldError, SpecInvalid, reading

AGENTS = {"shell": AgentInfo("shell")}
ROLES = {"reviewer": "Review: {{ task }}"}


def load(text: str) -> spec.BatchSpec:
    return spec.load(text, agents=AGENTS, roles=ROLES)


def errors_of(text: str) -> list[FieldError]:
    with pytest.raises(SpecInvalid) as caught:
        load(text)
    return caught.value.errors


def the_error(text: str) -> FieldError:
    errors = errors_of(text)
    assert len(errors) == 1, errors
    return errors[0]


def batch_json(**fields) -> str:
    data = {"name": "b", "agent": "shell", "tasks": [{"key": "a", "prompt": "go"}]}
    data.update(fields)
    return json.dumps(data)


def alias_bomb(levels: int) -> str:
    lines = ['  a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"  a{n}: &a{n} [" + ",".join([f"*a{n - 1}"] * 9) + "]" for n in range(1, levels + 1)]
    return "name: bomb\nagent: shell\nvars:\n" + "\n".join(lines) + "\ntasks: [{key: a, prompt: go}]\n"


# --- before anything is expanded ------------------------------------------------------


@pytest.mark.timeout(60)
def test_it_refuses_an_alias_bomb():
    text = alias_bomb(9)
    assert len(text.encode()) < 600
    error = the_error(text)
    assert "expands to more than" in error.message and "aliases" in error.message
    assert error.where == "batch" and error.field.startswith("vars.a")


def test_a_few_aliases_are_fine():
    text = "name: b\nagent: shell\nvars: {x: &x [1, 2]}\ntasks:\n  - {key: a, prompt: go, vars: {y: *x}}\n"
    assert load(text).tasks[0].key == "a"


def test_it_refuses_more_aliases_than_allowed():
    refs = ", ".join(f"v{n}: *x" for n in range(reading.MAX_ALIASES + 1))
    error = the_error(f"name: b\nagent: shell\nvars: {{x: &x 1, {refs}}}\ntasks: [{{key: a}}]\n")
    assert f"more than {reading.MAX_ALIASES} aliases" in error.message


def test_an_alias_to_the_mapping_it_is_in_is_refused():
    error = the_error("name: b\nagent: shell\nvars: &v {me: *v}\ntasks: [{key: a}]\n")
    assert "refers to the list or mapping it is in" in error.message


def test_it_refuses_nesting_nine_hundred_deep_without_a_recursion_error():
    error = the_error(batch_json(vars={"v": "PLACE"}).replace('"PLACE"', "[" * 900 + "]" * 900))
    assert f"nested more than {reading.MAX_DEPTH}" in error.message
    assert error.field.startswith("vars.v")


def test_it_refuses_an_integer_of_five_thousand_digits():
    error = the_error(batch_json(vars={"v": "PLACE"}).replace('"PLACE"', "9" * 5000))
    assert (error.field, error.message) == ("vars.v", f"a number longer than {reading.MAX_NUMBER_CHARS} characters")


@pytest.mark.parametrize("number", [".inf", "-.inf", ".nan", "1.0e+999"])
def test_infinite_and_undefined_numbers_are_refused(number):
    error = the_error(f"name: b\nagent: shell\nvars: {{v: {number}}}\ntasks: [{{key: a}}]\n")
    assert error.field == "vars.v" and "finite" in error.message


def test_a_text_over_the_limit_is_refused_with_its_task_and_line():
    long_prompt = "x" * (reading.MAX_TEXT_CHARS + 1)
    error = the_error(f"name: b\nagent: shell\ntasks:\n  - key: a\n    prompt: {long_prompt}\n")
    assert (error.index, error.field, error.line) == (0, "prompt", 5)
    assert f"over {reading.MAX_TEXT_CHARS} characters" in error.message


def test_a_document_over_the_size_limit_is_refused_before_it_is_read():
    error = the_error("# " + "x" * reading.MAX_SPEC_BYTES + "\nname: b\n")
    assert f"over {reading.MAX_SPEC_BYTES} bytes" in error.message


@pytest.mark.parametrize("tagged", ["!!binary aGk=", "!!set {a: null}", "!!timestamp 2024-01-01", "!!omap [a: 1]"])
def test_values_json_cannot_hold_are_refused_by_line(tagged):
    error = the_error(f"name: b\nagent: shell\nvars:\n  v: {tagged}\ntasks: [{{key: a}}]\n")
    assert error.line == 4 and "plain text, numbers, lists or mappings" in error.message


# --- Unicode ------------------------------------------------------------------------


def test_an_emoji_written_by_json_dumps_as_a_surrogate_pair_is_the_emoji():
    text = json.dumps({"name": "smile \U0001f642", "agent": "shell", "tasks": [{"key": "a", "prompt": "\U0001f642"}]})
    assert "\\ud83d\\ude42" in text
    batch = load(text)
    assert batch.name == "smile \U0001f642" and batch.tasks[0].prompt == "\U0001f642"
    assert batch.data["name"] == "smile \U0001f642"
    batch.name.encode("utf-8")  # storable


def test_a_lone_surrogate_is_refused_naming_the_field():
    error = the_error('{"name": "b", "agent": "shell", "tasks": [{"key": "a", "prompt": "half \\ud83d"}]}')
    assert (error.index, error.field) == (0, "prompt")
    assert "lone surrogate" in error.message


def test_a_nul_written_as_an_escape_is_refused_naming_the_field():
    error = the_error('{"name": "b\\u0000", "agent": "shell", "tasks": [{"key": "a"}]}')
    assert (error.where, error.field, error.message) == ("batch", "name", "contains a NUL character")


def test_right_to_left_and_combining_characters_are_ordinary_text():
    name = "\u202eevil\u0301 \u05e9\u05dc\u05d5\u05dd"
    assert load(batch_json(name=name)).name == name


# --- stored strings fit their columns ---------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "maximum"),
    [
        ({"name": "n" * 201}, "name", 200),
        ({"webhook": "https://example.org/" + "p" * 190}, "webhook", 200),
        ({"cwd": "d" * 501}, "cwd", 500),
    ],
)
def test_batch_texts_longer_than_their_column_are_refused(fields, field, maximum):
    with pytest.raises(SpecInvalid) as caught:
        spec.load(batch_json(**fields), agents=AGENTS, roles=ROLES, is_admin=True)
    (error,) = caught.value.errors
    assert (error.where, error.field) == ("batch", field) and f"the maximum is {maximum}" in error.message


@pytest.mark.parametrize(
    ("task", "field", "says"),
    [
        ({"key": "k" * 101}, "key", "100 at most"),
        ({"key": "a", "role": "r" * 65}, "role", "the maximum is 64"),
        ({"key": "a", "cwd": "c" * 501}, "cwd", "the maximum is 500"),
    ],
)
def test_task_texts_longer_than_their_column_are_refused(task, field, says):
    error = the_error(batch_json(tasks=[task]))
    assert (error.index, error.field) == (0, field) and says in error.message


def test_a_prompt_that_repeats_a_long_variable_is_refused_before_it_is_built():
    text = batch_json(vars={"big": "x" * 50_000}, tasks=[{"key": "a", "prompt": "{{ big }}" * 10_000}])
    error = the_error(text)
    assert error.field == "prompt" and "once its variables are filled" in error.message


# --- file scopes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "says"),
    [
        (["a/" * 40 + "x"], f"more than {spec.MAX_GLOB_SEGMENTS} segments"),
        (["**/" * 600 + "x"], f"over {spec.MAX_GLOB_CHARS} characters"),
        ([f"src/{n}.py" for n in range(spec.MAX_FILES_PER_TASK + 1)], f"the maximum is {spec.MAX_FILES_PER_TASK}"),
    ],
)
def test_file_patterns_too_long_or_too_many_are_refused(files, says):
    error = the_error(batch_json(tasks=[{"key": "a", "files": files}]))
    assert (error.index, error.task, error.field) == (0, "a", "files") and says in error.message


def test_a_thousand_tasks_of_twenty_patterns_each_are_checked():
    tasks = [{"key": f"t{i}", "files": [f"src/m{i}/f{j}/**" for j in range(20)]} for i in range(1000)]
    assert len(load(batch_json(tasks=tasks)).tasks) == 1000


def test_too_many_broad_patterns_are_a_field_error_not_a_long_wait():
    tasks = [{"key": f"t{i}", "files": [f"*/**/*.e{i}"]} for i in range(800)]
    error = the_error(batch_json(tasks=tasks))
    assert (error.where, error.field) == ("batch", "files") and "start them with a directory name" in error.message


def test_many_conflicts_are_named_up_to_a_limit():
    tasks = [{"key": f"t{i}", "files": ["src/**"]} for i in range(60)]
    errors = errors_of(batch_json(tasks=tasks))
    assert len(errors) == spec.planning.MAX_CONFLICTS_SHOWN + 1
    assert errors[-1].message == f"more file conflicts than the {spec.planning.MAX_CONFLICTS_SHOWN} shown"


def test_a_control_character_is_refused_with_its_line():
    error = the_error('name: b\nagent: shell\ntasks: [{key: a, prompt: "\x0e"}]\n')
    assert error.line == 3 and "character U+000E is not allowed" in error.message


def test_aliases_of_long_texts_are_refused_before_they_expand():
    """Few values, but each a long text: 10 x 10 x 10 x 90 KB would be 90 MB once expanded."""
    text = "x" * 90_000
    lines = ["name: b", "agent: shell", "tasks: [{key: a, prompt: '{{ e }}'}]", "vars:"]
    lines.append(f"  a: &a [{', '.join([repr(text)] * 10)}]")
    lines.append("  b: &b [" + ", ".join(["*a"] * 10) + "]")
    lines.append("  c: &c [" + ", ".join(["*b"] * 10) + "]")
    lines.append("  e: *c")
    started = time.monotonic()
    with pytest.raises(spec.SpecInvalid, match="characters of text"):
        spec.load("\n".join(lines) + "\n", agents=AGENTS, roles={})
    assert time.monotonic() - started < 5


def test_a_list_variable_cannot_fill_a_prompt():
    doc = "name: b\nagent: shell\nvars: {e: [1, 2]}\ntasks: [{key: a, prompt: 'go {{ e }}'}]\n"
    with pytest.raises(spec.SpecInvalid, match="list or mapping"):
        spec.load(doc, agents=AGENTS, roles={})
