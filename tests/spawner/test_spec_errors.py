"""Spec errors as data: every error of a spec in one answer, each with its task index, key, field and line."""

from __future__ import annotations

from textwrap import dedent

import pytest

from spawner import spec
from spawner.spec import AgentInfo, FieldError, SpecInvalid

AGENTS = {"shell": AgentInfo("shell")}


def errors_of(text: str) -> list[FieldError]:
    with pytest.raises(SpecInvalid) as caught:
        spec.load(dedent(text), agents=AGENTS, roles={})
    return caught.value.errors


def test_a_task_error_carries_the_task_index_key_field_and_line():
    (error,) = errors_of(
        """\
        name: b
        agent: shell
        tasks:
          - key: first
          - key: second
            timeout: soon
        """
    )
    assert (error.index, error.task, error.field, error.line) == (1, "second", "timeout", 5)
    assert error.where == "task 'second' (tasks[1], line 5)"


def test_a_task_without_a_usable_key_still_carries_its_index_and_line():
    (error,) = errors_of("name: b\nagent: shell\ntasks:\n  - {key: a}\n  - {key: 'bad key'}\n")
    assert (error.index, error.task, error.field, error.line) == (1, None, "key", 5)


def test_a_repeated_field_carries_its_task_and_the_line_of_the_repeat():
    (error,) = errors_of("name: b\nagent: shell\ntasks:\n  - key: a\n    prompt: x\n    prompt: y\n")
    assert (error.index, error.task, error.field, error.line) == (0, "a", "prompt", 6)


def test_a_batch_error_carries_no_task():
    (error,) = errors_of("name: b\nagent: shell\nmode: sideways\ntasks: [{key: a}]\n")
    assert (error.where, error.field, error.index, error.task) == ("batch", "mode", None, None)


def test_a_syntax_error_carries_its_line():
    (error,) = errors_of("name: b\ntasks: [\n  {key: a\n")
    assert error.line is not None and error.message.startswith("not valid YAML or JSON")


def test_an_unknown_dependency_and_a_cycle_elsewhere_are_both_reported():
    errors = errors_of(
        """\
        name: b
        agent: shell
        tasks:
          - {key: a, depends_on: [ghost]}
          - {key: b, depends_on: [c]}
          - {key: c, depends_on: [b]}
        """
    )
    assert [(e.task, e.message) for e in errors] == [
        ("a", "unknown dependency 'ghost'"),
        ("b", "dependency cycle: b -> c -> b"),
    ]


def test_two_separate_cycles_are_both_reported():
    errors = errors_of(
        """\
        name: b
        agent: shell
        tasks:
          - {key: a, depends_on: [b]}
          - {key: b, depends_on: [a]}
          - {key: c, depends_on: [d]}
          - {key: d, depends_on: [c]}
        """
    )
    assert [e.message for e in errors] == ["dependency cycle: a -> b -> a", "dependency cycle: c -> d -> c"]


def test_a_duplicate_key_and_an_unknown_dependency_are_both_reported():
    errors = errors_of(
        """\
        name: b
        agent: shell
        tasks:
          - {key: a}
          - {key: a, timeout: -1}
          - {key: c, depends_on: [ghost]}
        """
    )
    assert [(e.index, e.field) for e in errors] == [(1, "key"), (1, "timeout"), (2, "depends_on")]
    assert "duplicate key" in errors[0].message and "unknown dependency 'ghost'" in errors[2].message


def test_an_unknown_dependency_does_not_hide_a_file_conflict():
    errors = errors_of(
        """\
        name: b
        agent: shell
        tasks:
          - {key: a, depends_on: [ghost], files: [src/]}
          - {key: b, files: [src/x.py]}
        """
    )
    assert [(e.task, e.field) for e in errors] == [("a", "depends_on"), ("b", "files")]


def test_a_loaded_spec_carries_its_data_and_its_text():
    text = "name: b\nagent: shell\ntasks: [{key: a, prompt: go}]\n"
    batch_spec = spec.load(text, agents=AGENTS, roles={})
    assert batch_spec.text == text
    assert batch_spec.data == {"name": "b", "agent": "shell", "tasks": [{"key": "a", "prompt": "go"}]}


def test_a_task_with_a_bad_key_still_has_its_other_fields_checked():
    text = "name: x\nagent: sh\ntasks:\n  - {key: 'bad key!', prompt: x, timeout: -1, color: red}\n"
    with pytest.raises(SpecInvalid) as caught:
        spec.load(text, agents={"sh": spec.AgentInfo("sh")}, roles={})
    assert {e.field for e in caught.value.errors} == {"key", "timeout", "color"}
    assert {e.index for e in caught.value.errors} == {0}
