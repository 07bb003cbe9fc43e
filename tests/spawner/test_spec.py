"""The batch spec: every bad input gets an error that names the task and the field."""

from __future__ import annotations

import json
from textwrap import dedent

import pytest

from spawner import spec
from spawner.spec import AgentInfo, FieldError, Limits, SpecInvalid

AGENTS = {
    "shell": AgentInfo("shell"),
    "codex": AgentInfo("codex", default_timeout=600),
    "claude": AgentInfo("claude", available=False, reason="'claude' is not on PATH"),
    "root-shell": AgentInfo("root-shell", admin_only=True),
}
ROLES = {
    "reviewer": "Review for {{ repo }}.\nTask ({{ key }}):\n{{ task }}",
    "builder": "Use {{ deps.plan.summary }} to do: {{ task }}",
}


def load(text: str, **kwargs) -> spec.BatchSpec:
    kwargs.setdefault("agents", AGENTS)
    kwargs.setdefault("roles", ROLES)
    return spec.load(dedent(text), **kwargs)


def errors_of(text: str, **kwargs) -> list[FieldError]:
    with pytest.raises(SpecInvalid) as caught:
        load(text, **kwargs)
    return caught.value.errors


def the_error(text: str, **kwargs) -> FieldError:
    errors = errors_of(text, **kwargs)
    assert len(errors) == 1, errors
    return errors[0]


def one_task(extra: str) -> str:
    """A batch of one shell task 'a' with extra lines for that task."""
    return "name: b\nagent: shell\ntasks:\n  - key: a\n    prompt: go\n" + extra


# --- good specs -------------------------------------------------------------------


def test_a_minimal_spec_gets_the_documented_defaults():
    batch = load(
        """
        name: smallest
        tasks:
          - {key: a, agent: shell, prompt: echo hi}
        """
    )
    assert (batch.name, batch.mode, batch.max_parallel) == ("smallest", "parallel", 3)
    assert (batch.timeout, batch.retries, batch.backoff) == (1800, 0, 2.0)
    assert (batch.failure_policy, batch.aggregation, batch.cwd) == ("continue", "", "")
    (task,) = batch.tasks
    assert task == spec.TaskSpec(key="a", agent="shell", prompt="echo hi", priority=1, timeout=1800)
    assert batch.unavailable == () and batch.warnings == []


def test_json_input_is_read_like_yaml():
    text = json.dumps(
        {
            "name": "from json",
            "max_parallel": 2,
            "tasks": [
                {"key": "a", "agent": "shell", "prompt": "one"},
                {"key": "b", "agent": "shell", "prompt": "two", "depends_on": ["a"], "priority": "P0"},
            ],
        }
    )
    batch = load(text)
    assert batch.max_parallel == 2
    assert [(t.key, t.depends_on, t.priority) for t in batch.tasks] == [("a", (), 1), ("b", ("a",), 0)]


def test_every_batch_setting_is_read():
    batch = load(
        """
        name: "  all settings  "
        mode: sequential
        max_parallel: 8
        timeout: 60
        retries: 2
        backoff: 0.5
        failure_policy: fail_fast
        aggregation: vote
        cwd: work
        agent: shell
        tasks:
          - {key: a}
        """
    )
    assert batch.name == "all settings"
    assert (batch.mode, batch.max_parallel, batch.timeout, batch.retries) == ("sequential", 8, 60, 2)
    assert (batch.backoff, batch.failure_policy, batch.aggregation, batch.cwd) == (
        0.5,
        "fail_fast",
        "vote",
        "work",
    )


def test_the_batch_agent_is_the_default_and_a_task_may_choose_another():
    batch = load(
        """
        name: b
        agent: shell
        tasks:
          - {key: a}
          - {key: b, agent: codex}
        """
    )
    assert [t.agent for t in batch.tasks] == ["shell", "codex"]


@pytest.mark.parametrize(("given", "priority"), [("P0", 0), ("P1", 1), ("P2", 2), ("p2", 2), (0, 0), (2, 2)])
def test_priority_accepts_a_label_or_a_whole_number(given, priority):
    batch = load(one_task(f"    priority: {given}\n"))
    assert batch.tasks[0].priority == priority


def test_tasks_inherit_the_batch_timeout_and_retries_unless_they_set_their_own():
    batch = load(
        """
        name: b
        agent: shell
        timeout: 60
        retries: 2
        tasks:
          - {key: a}
          - {key: b, timeout: 5, retries: 0}
        """
    )
    assert [(t.timeout, t.retries) for t in batch.tasks] == [(60, 2), (5, 0)]


def test_an_agent_types_default_timeout_applies_when_the_batch_sets_none():
    batch = load("name: b\ntasks:\n  - {key: a, agent: codex}\n")
    assert batch.tasks[0].timeout == 600


def test_a_timeout_set_on_the_batch_beats_the_agent_types_default():
    batch = load("name: b\ntimeout: 60\ntasks:\n  - {key: a, agent: codex}\n")
    assert batch.tasks[0].timeout == 60


def test_files_and_depends_on_may_be_one_string():
    batch = load(
        """
        name: b
        agent: shell
        tasks:
          - {key: a, files: src/a.py}
          - {key: b, depends_on: a, files: src/a.py}
        """
    )
    assert batch.tasks[0].files == ("src/a.py",)
    assert batch.tasks[1].depends_on == ("a",)


def test_an_unavailable_agent_type_is_a_warning_not_an_error():
    batch = load("name: b\ntasks:\n  - {key: a, agent: claude}\n  - {key: b, agent: shell}\n")
    assert batch.unavailable == (("a", "agent type 'claude' is not available on this server: 'claude' is not on PATH"),)
    assert batch.warnings == ["task 'a': agent type 'claude' is not available on this server: 'claude' is not on PATH"]


def test_an_admin_may_launch_an_admin_only_agent_type():
    batch = load("name: b\ntasks:\n  - {key: a, agent: root-shell}\n", is_admin=True)
    assert batch.tasks[0].agent == "root-shell"


def test_plan_tasks_take_a_declared_estimate_over_a_past_duration():
    batch = load(
        """
        name: b
        agent: shell
        tasks:
          - {key: a, estimate: 5, files: [a.py]}
          - {key: b, depends_on: [a], priority: P0}
        """
    )
    plan_tasks = batch.plan_tasks(past={"a": 99.0, "b": 7.0})
    assert [(t.key, t.estimate, t.depends_on, t.priority) for t in plan_tasks] == [
        ("a", 5.0, (), 1),
        ("b", 7.0, ("a",), 0),
    ]
    assert plan_tasks[0].files == ("a.py",) and plan_tasks[0].agent_type == "shell"


# --- roles and variables ----------------------------------------------------------


def test_a_role_template_is_filled_with_the_task_its_key_and_vars():
    batch = load(
        """
        name: b
        agent: shell
        vars: {repo: spawner}
        tasks:
          - {key: lint, role: reviewer, prompt: check the style}
        """
    )
    assert batch.tasks[0].prompt == "Review for spawner.\nTask (lint):\ncheck the style"
    assert batch.tasks[0].role == "reviewer"


def test_task_vars_override_batch_vars():
    batch = load(
        """
        name: b
        agent: shell
        vars: {repo: batch-repo}
        tasks:
          - {key: a, role: reviewer, prompt: x, vars: {repo: task-repo}}
        """
    )
    assert batch.tasks[0].prompt.startswith("Review for task-repo.")


def test_a_role_variable_without_a_value_names_the_task_and_the_variable():
    error = the_error(one_task("    role: reviewer\n"))
    assert error.task == "a" and error.field == "vars"
    assert "task 'a'" in error.where
    assert "{{ repo }}" in error.message and "'reviewer'" in error.message


def test_an_unknown_role_names_the_known_ones():
    error = the_error(one_task("    role: reveiwer\n"))
    assert (error.task, error.field) == ("a", "role")
    assert "unknown role 'reveiwer'" in error.message and "builder, reviewer" in error.message


def test_a_role_that_is_not_a_name_is_an_error_not_a_crash():
    error = the_error(one_task("    role: [reviewer]\n"))
    assert (error.task, error.field) == ("a", "role")


def test_dependency_results_are_left_for_spawn_time_in_a_role():
    batch = load(
        """
        name: b
        agent: shell
        tasks:
          - {key: plan}
          - {key: build, role: builder, prompt: the build, depends_on: [plan]}
        """
    )
    assert batch.tasks[1].prompt == "Use {{ deps.plan.summary }} to do: the build"


def test_prompt_variables_are_filled_when_vars_are_given_and_deps_stay():
    batch = load(
        """
        name: b
        agent: shell
        vars: {target: docs}
        tasks:
          - {key: a}
          - key: b
            depends_on: [a]
            prompt: "fix {{ target }} in {{key}} after {{ deps.a.summary }}"
        """
    )
    assert batch.tasks[1].prompt == "fix docs in b after {{ deps.a.summary }}"


def test_an_unknown_prompt_variable_is_an_error_on_the_prompt():
    error = the_error("name: b\nagent: shell\ntasks:\n  - {key: a, prompt: 'fix {{ taget }}', vars: {target: x}}\n")
    assert (error.task, error.field) == ("a", "prompt")
    assert "{{ taget }}" in error.message


# --- errors: agent types ----------------------------------------------------------


def test_an_unknown_agent_type_names_the_task_and_the_known_types():
    error = the_error("name: b\ntasks:\n  - {key: a, agent: clade}\n")
    assert (error.task, error.field) == ("a", "agent")
    assert error.where == "task 'a' (tasks[0], line 3)"
    assert "unknown agent type 'clade'" in error.message
    assert "claude, codex, root-shell, shell" in error.message


def test_a_task_without_an_agent_type_is_an_error():
    error = the_error("name: b\ntasks:\n  - {key: a}\n")
    assert (error.task, error.field) == ("a", "agent")
    assert "required" in error.message


def test_an_admin_only_agent_type_cannot_be_launched_by_someone_else():
    error = the_error("name: b\ntasks:\n  - {key: a, agent: root-shell}\n", is_admin=False)
    assert (error.task, error.field) == ("a", "agent")
    assert "only be launched by an admin" in error.message


# --- errors: the dependency graph -------------------------------------------------


def test_an_unknown_dependency_names_it():
    error = the_error(one_task("    depends_on: [bild]\n"))
    assert (error.task, error.field) == ("a", "depends_on")
    assert "unknown dependency 'bild'" in error.message


def test_a_task_cannot_depend_on_itself():
    error = the_error(one_task("    depends_on: [a]\n"))
    assert (error.task, error.field) == ("a", "depends_on")
    assert "itself" in error.message


def test_a_dependency_cycle_is_named_in_order():
    error = the_error(
        """
        name: b
        agent: shell
        tasks:
          - {key: a, depends_on: [b]}
          - {key: b, depends_on: [a]}
        """
    )
    assert (error.task, error.field) == ("a", "depends_on")
    assert error.message == "dependency cycle: a -> b -> a"


def test_a_longer_cycle_is_named_without_the_tasks_outside_it():
    error = the_error(
        """
        name: b
        agent: shell
        tasks:
          - {key: start}
          - {key: x, depends_on: [start, z]}
          - {key: y, depends_on: [x]}
          - {key: z, depends_on: [y]}
        """
    )
    assert error.message == "dependency cycle: x -> z -> y -> x"


def test_a_duplicate_task_key_names_both_places():
    error = the_error(
        """
        name: b
        agent: shell
        tasks:
          - {key: a}
          - {key: a}
        """
    )
    assert (error.task, error.field) == ("a", "key")
    assert error.where == "task 'a' (tasks[1], line 6)"
    assert "also used by task 'a' (tasks[0], line 5)" in error.message


def test_a_field_given_twice_in_a_task_is_an_error_not_silently_dropped():
    error = the_error(one_task("    depends_on: [x]\n    depends_on: [y]\n"))
    assert (error.task, error.field) == ("a", "depends_on")
    assert error.where == "task 'a' (tasks[0], line 4)"
    assert "given twice (lines 6 and 7)" in error.message


def test_a_batch_field_given_twice_is_an_error():
    error = the_error("name: b\nmax_parallel: 2\nmax_parallel: 9\ntasks:\n  - {key: a, agent: shell}\n")
    assert (error.where, error.field, error.task) == ("batch", "max_parallel", None)
    assert "lines 2 and 3" in error.message


def test_a_key_given_twice_in_json_is_an_error():
    text = '{"name": "b", "tasks": [{"key": "a", "agent": "shell", "prompt": "x", "prompt": "y"}]}'
    error = the_error(text)
    assert (error.task, error.field) == ("a", "prompt")


def test_overlapping_files_without_a_dependency_name_both_tasks_and_the_pattern():
    error = the_error(
        """
        name: b
        agent: shell
        tasks:
          - {key: api, files: ["src/**"]}
          - {key: fix, files: [docs/, src/api.py]}
        """
    )
    assert (error.task, error.field) == ("fix", "files")
    assert "tasks 'api' and 'fix'" in error.message
    assert "'src/**' and 'src/api.py'" in error.message
    assert "depends_on" in error.message


def test_the_same_pattern_in_two_tasks_is_named_once():
    error = the_error(
        """
        name: b
        agent: shell
        tasks:
          - {key: a, files: [README.md]}
          - {key: b, files: [README.md]}
        """
    )
    assert "may both touch 'README.md'" in error.message


def test_overlapping_files_are_fine_when_one_task_waits_for_the_other():
    batch = load(
        """
        name: b
        agent: shell
        tasks:
          - {key: a, files: ["src/**"]}
          - {key: b, files: [src/x.py], depends_on: [a]}
          - {key: c, files: [src/y.py], depends_on: [b]}
        """
    )
    assert [t.key for t in batch.tasks] == ["a", "b", "c"]


# --- errors: types and limits -----------------------------------------------------


@pytest.mark.parametrize(
    ("line", "field", "says"),
    [
        ("max_parallel: 0", "max_parallel", "between 1 and 256, got 0"),
        ("max_parallel: 257", "max_parallel", "between 1 and 256, got 257"),
        ("max_parallel: three", "max_parallel", "whole number"),
        ("max_parallel: true", "max_parallel", "whole number"),
        ("timeout: 0", "timeout", "between 1 and 14400"),
        ("timeout: 1.5", "timeout", "whole number"),
        ("retries: -1", "retries", "between 0 and 10"),
        ("retries: 11", "retries", "between 0 and 10"),
        ("backoff: soon", "backoff", "must be a number"),
        ("mode: turbo", "mode", "parallel, sequential"),
        ("failure_policy: stop", "failure_policy", "continue, fail_fast"),
        ("aggregation: average", "aggregation", "merge, vote"),
        ("cwd: [a]", "cwd", "must be a path"),
        ("vars: [a]", "vars", "mapping"),
        ("depend_on: [a]", "depend_on", "unknown field"),
    ],
)
def test_a_bad_batch_setting_names_the_field(line, field, says):
    error = the_error(f"name: b\n{line}\ntasks:\n  - {{key: a, agent: shell}}\n")
    assert (error.where, error.field, error.task) == ("batch", field, None)
    assert says in error.message


@pytest.mark.parametrize(
    ("line", "field", "says"),
    [
        ("priority: P7", "priority", "P0, P1 or P2, got 'P7'"),
        ("priority: 7", "priority", "P0, P1 or P2, got 7"),
        ("priority: high", "priority", "P0, P1 or P2"),
        ("timeout: 0", "timeout", "between 1 and 14400, got 0"),
        ("timeout: 99999", "timeout", "between 1 and 14400"),
        ("timeout: 10s", "timeout", "whole number"),
        ("retries: 11", "retries", "between 0 and 10"),
        ("retries: -1", "retries", "between 0 and 10"),
        ("files: {src: yes}", "files", "list of non-empty strings"),
        ("files: 42", "files", "list of non-empty strings"),
        ("files: ['']", "files", "list of non-empty strings"),
        ("depends_on: {a: b}", "depends_on", "list of non-empty strings"),
        ("prompt2: oops", "prompt2", "unknown field"),
        ("depend_on: [x]", "depend_on", "unknown field (known: agent, budget_usd, cwd, depends_on"),
        ("estimate: -1", "estimate", "between 0"),
        ("cwd: 3", "cwd", "must be a path"),
        ("vars: 3", "vars", "mapping"),
    ],
)
def test_a_bad_task_setting_names_the_task_and_the_field(line, field, says):
    error = the_error(f"name: b\nagent: shell\ntasks:\n  - key: a\n    {line}\n")
    assert (error.task, error.field) == ("a", field)
    assert error.where == "task 'a' (tasks[0], line 4)"
    assert says in error.message


def test_a_prompt_that_is_not_text_is_an_error():
    error = the_error("name: b\nagent: shell\ntasks:\n  - {key: a, prompt: [x]}\n")
    assert (error.task, error.field) == ("a", "prompt")


def test_limits_come_from_the_server_not_from_constants():
    limits = Limits(max_parallel=4, max_timeout=60, max_retries=1)
    errors = errors_of(
        "name: b\nmax_parallel: 5\nagent: shell\ntasks:\n  - {key: a, timeout: 61, retries: 2}\n",
        limits=limits,
    )
    assert len(errors) == 3
    assert {(e.field, e.message) for e in errors} == {
        ("max_parallel", "must be between 1 and 4, got 5"),
        ("timeout", "must be between 1 and 60, got 61"),
        ("retries", "must be between 0 and 1, got 2"),
    }


def test_defaults_nobody_wrote_are_held_to_a_lower_server_maximum():
    limits = Limits(max_parallel=2, max_timeout=300)
    batch = load("name: b\ntasks:\n  - {key: a, agent: shell}\n  - {key: b, agent: codex}\n", limits=limits)
    assert (batch.max_parallel, batch.timeout) == (2, 300)
    assert [t.timeout for t in batch.tasks] == [300, 300]


def test_a_batch_without_a_name_is_an_error():
    error = the_error("tasks:\n  - {key: a, agent: shell}\n")
    assert (error.where, error.field) == ("batch", "name")


@pytest.mark.parametrize("tasks", ["", "tasks: []", "tasks:"])
def test_an_empty_batch_is_an_error(tasks):
    error = the_error(f"name: b\n{tasks}\n")
    assert (error.where, error.field) == ("batch", "tasks")
    assert "empty" in error.message


def test_tasks_must_be_a_list():
    error = the_error("name: b\ntasks: {a: {agent: shell}}\n")
    assert (error.field, error.message) == ("tasks", "must be a list of tasks")


def test_more_tasks_than_the_maximum_is_an_error():
    text = "name: b\nagent: shell\ntasks:\n" + "".join(f"  - {{key: t{i}}}\n" for i in range(3))
    error = the_error(text, limits=Limits(max_tasks=2))
    assert (error.where, error.field) == ("batch", "tasks")
    assert error.message == "has 3 tasks; the maximum is 2"


def test_exactly_the_maximum_number_of_tasks_is_fine():
    text = "name: b\nagent: shell\ntasks:\n" + "".join(f"  - {{key: t{i}}}\n" for i in range(2))
    assert len(load(text, limits=Limits(max_tasks=2)).tasks) == 2


@pytest.mark.parametrize("key", ["", "has space", "-dash-first", "x" * 101, 5])
def test_a_bad_task_key_is_named_by_position(key):
    error = the_error(f"name: b\nagent: shell\ntasks:\n  - key: {json.dumps(key)}\n")
    assert (error.where, error.field) == ("tasks[0], line 4", "key")


def test_a_task_that_is_not_a_mapping_is_named_by_position():
    error = the_error("name: b\nagent: shell\ntasks:\n  - {key: a}\n  - just text\n")
    assert error.where == "tasks[1], line 5"


def test_field_names_that_are_not_text_are_reported_not_a_crash():
    errors = errors_of("name: b\n1: x\nnmae: y\nagent: shell\ntasks:\n  - {key: a, 2: z, prmpt: q}\n")
    assert [(e.where, e.field) for e in errors] == [
        ("batch", "1"),
        ("batch", "nmae"),
        ("task 'a' (tasks[0], line 6)", "2"),
        ("task 'a' (tasks[0], line 6)", "prmpt"),
    ]


def test_every_error_is_reported_at_once():
    errors = errors_of(
        """
        name: b
        max_parallel: 0
        tasks:
          - {key: a, agent: nope}
          - {key: b, agent: shell, priority: P9, depends_on: [zz]}
        """
    )
    assert [(e.task, e.field) for e in errors] == [
        (None, "max_parallel"),
        ("a", "agent"),
        ("b", "priority"),
        ("b", "depends_on"),
    ]


# --- errors: the text itself ------------------------------------------------------


def test_invalid_yaml_names_the_line():
    error = the_error("name: b\ntasks:\n  - {key: a, agent: shell\n  - {key: b}\n")
    assert error.where.startswith("line 4")
    assert error.message.startswith("not valid YAML or JSON")


def test_invalid_json_names_the_line():
    error = the_error('{\n  "name": "b",\n  "tasks": [\n    {"key": "a",}}\n  ]\n}\n')
    assert error.where.startswith("line 4")


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just words"])
def test_a_spec_that_is_not_a_mapping_is_an_error(text):
    error = the_error(text)
    assert error.where == "spec" and "mapping" in error.message


def test_task_lines_are_those_of_the_source_text():
    errors = errors_of(
        """
        name: b
        agent: shell
        tasks:
          - key: a
            prompt: one

          - key: b
            agent: nope
        """
    )
    assert [e.where for e in errors] == ["task 'b' (tasks[1], line 8)"]


def test_an_error_reads_as_where_field_and_message():
    assert str(FieldError("batch", "mode", "bad")) == "batch: mode: bad"
    assert str(FieldError("line 3, column 1", "", "bad")) == "line 3, column 1: bad"
    assert str(SpecInvalid([FieldError("a", "b", "c"), FieldError("d", "", "e")])) == "a: b: c\nd: e"
