"""The command runner: prompts never pass through a shell; stop takes the whole group."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from spawner import presets
from spawner.engine import execution, redaction
from spawner.runners import CommandRunner, Invocation, RunnerError
from spawner.runners.command import build_argv, owns_group, read_exit_record, renew_lease, was_fenced
from tests.spawner.helpers import pid_alive, wait_for

NASTY = "hello $(touch PWNED) `touch PWNED2`; rm -rf / && echo 'quoted' \"double\" \n second line"
ECHO_ARGS = ["python3", "-c", "import json,sys; print(json.dumps(sys.argv[1:]))"]


def invocation(tmp_path: Path, argv, prompt=NASTY, via="arg", env=None) -> Invocation:
    return Invocation(
        argv_template=tuple(argv),
        prompt=prompt,
        prompt_via=via,
        key="k",
        cwd=tmp_path,
        log_path=tmp_path / "out.log",
        result_path=tmp_path / "result.json",
        prompt_path=tmp_path / "prompt.txt",
        env={"PATH": os.environ["PATH"], **(env or {})},
    )


def run_to_end(tmp_path, inv) -> str:
    started = CommandRunner().start(inv)
    wait_for(lambda: started.poll() is not None, 10, "the process to end")
    return inv.log_path.read_text()


def test_a_prompt_in_argv_is_one_element_and_never_reaches_a_shell(tmp_path):
    out = run_to_end(tmp_path, invocation(tmp_path, [*ECHO_ARGS, "{prompt}", "--key={key}"]))

    assert json.loads(out) == [NASTY, "--key=k"]
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "PWNED2").exists()


def test_a_prompt_on_stdin_arrives_verbatim(tmp_path):
    out = run_to_end(tmp_path, invocation(tmp_path, ["cat"], via="stdin"))

    assert out == NASTY


def test_a_prompt_in_the_environment_arrives_verbatim(tmp_path):
    argv = ["python3", "-c", "import os; print(os.environ['SPAWNER_PROMPT'], end='')"]
    assert run_to_end(tmp_path, invocation(tmp_path, argv, via="env")) == NASTY


def test_a_prompt_in_a_file_is_named_in_argv_and_env(tmp_path):
    argv = [
        "python3",
        "-c",
        "import os,sys; print(open(sys.argv[1]).read() == open(os.environ['SPAWNER_PROMPT_FILE']).read())",
        "{prompt_file}",
    ]  # noqa: E501
    assert run_to_end(tmp_path, invocation(tmp_path, argv, via="file")).strip() == "True"
    assert (tmp_path / "prompt.txt").read_text() == NASTY


def test_an_empty_prompt_adds_no_empty_argument(tmp_path):
    inv = invocation(tmp_path, ["ruff", "check", "{prompt}"], prompt="")
    assert build_argv(inv) == ["ruff", "check"]


def test_the_environment_is_the_allowlist_plus_the_type_env_and_nothing_else(tmp_path):
    out = run_to_end(tmp_path, invocation(tmp_path, ["env"], prompt="", env={"EXTRA": "1"}))
    names = {line.split("=", 1)[0] for line in out.splitlines()}
    assert names == {"PATH", "EXTRA", "SPAWNER_RESULT_FILE", "SPAWNER_RUN_KEY"}


def test_stop_takes_the_whole_process_group_with_grandchildren(tmp_path):
    pidfile = tmp_path / "grandchild"
    argv = ["sh", "-c", f"sh -c 'echo $$ > {pidfile}; trap \"\" TERM; sleep 60' & sleep 60"]
    started = CommandRunner().start(invocation(tmp_path, argv, prompt=""))
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "the grandchild")
    grandchild = int(pidfile.read_text())

    t0 = time.monotonic()
    started.stop(grace=0.5)

    assert not pid_alive(started.pid)
    wait_for(lambda: not pid_alive(grandchild), 5, "the TERM-ignoring grandchild to be KILLed")
    assert time.monotonic() - t0 < 5


def test_a_missing_executable_is_a_clear_error(tmp_path):
    with pytest.raises(RunnerError, match="'no-such-tool' not found"):
        CommandRunner().start(invocation(tmp_path, ["no-such-tool", "{prompt}"]))


def test_a_missing_working_directory_is_a_clear_error(tmp_path):
    inv = invocation(tmp_path / "nope", ["true"])
    with pytest.raises(RunnerError, match="does not exist"):
        CommandRunner().start(inv)


class FakeType:
    env = {"MODE": "ci"}
    secret_names = ["SPAWNER_TEST_TOKEN"]


def test_secrets_are_read_from_the_server_environment_at_spawn_time(monkeypatch, settings):
    monkeypatch.setenv("SPAWNER_TEST_TOKEN", "s3cret")
    monkeypatch.setenv("NOT_ALLOWED", "x")

    env = execution.agent_env(FakeType())

    assert env["SPAWNER_TEST_TOKEN"] == "s3cret" and env["MODE"] == "ci"
    assert "NOT_ALLOWED" not in env


def test_a_missing_secret_names_itself(monkeypatch):
    monkeypatch.delenv("SPAWNER_TEST_TOKEN", raising=False)
    with pytest.raises(RunnerError, match="SPAWNER_TEST_TOKEN"):
        execution.agent_env(FakeType())


def test_the_tail_of_binary_output_decodes_without_nuls(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"\xff\xfe\x00abc" * 10 + b"end")
    tail = redaction.read_tail(log, 12, [])
    assert tail.endswith("end") and "\x00" not in tail


def test_a_result_file_that_is_not_json_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / "r.json"
    path.write_bytes(b"\xff{oops")
    assert execution.read_result(path)[0] is None
    assert "not valid JSON" in execution.read_result(path)[1]


def test_placeholders_inside_the_prompt_stay_as_written(tmp_path):
    argv = build_argv(invocation(tmp_path, ["agent", "{key}", "{prompt}"], "literal {key} and {cwd}"))
    assert argv == ["agent", "k", "literal {key} and {cwd}"]


def test_a_tool_prompt_can_never_become_an_option(tmp_path):
    pytest_type = next(t for t in presets.AGENT_TYPES if t["name"] == "pytest")
    argv = build_argv(invocation(tmp_path, pytest_type["argv"], "--junit-xml=/tmp/victim"))
    assert argv[-2:] == ["--", "--junit-xml=/tmp/victim"]


def test_stopping_a_process_leaks_no_file_descriptor(tmp_path):
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        CommandRunner().start(invocation(tmp_path, ["sleep", "{prompt}"], "5")).stop(grace=0.5)
    assert len(os.listdir("/proc/self/fd")) <= before


def test_a_nul_byte_in_a_prompt_fails_the_start_clearly(tmp_path):
    from spawner.runners import RunnerError

    with pytest.raises(RunnerError, match="cannot pass the prompt"):
        CommandRunner().start(invocation(tmp_path, ["echo", "{prompt}"], "a\x00b"))


def test_the_launcher_fences_its_agent_when_the_lease_file_is_not_renewed(tmp_path):
    """Its worker's heartbeat lapsed (dead, stopped, cut off): the whole group stops, grandchildren
    included, and the exit record says "fenced", not an exit code (so it is never harvested)."""
    pidfile = tmp_path / "grandchild"
    argv = ["sh", "-c", f"sh -c 'echo $$ > {pidfile}; trap \"\" TERM; sleep 60' & sleep 60"]
    inv = dataclasses.replace(invocation(tmp_path, argv, prompt=""), fence_seconds=1.0)
    t0 = time.monotonic()
    started = CommandRunner().start(inv)
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "the grandchild")
    grandchild = int(pidfile.read_text())

    wait_for(lambda: started.poll() is not None, 10, "the launcher to fence the agent")
    fenced_after = time.monotonic() - t0

    assert 1.0 <= fenced_after < 6
    wait_for(lambda: not pid_alive(grandchild), 5, "the TERM-ignoring grandchild to be killed")
    assert was_fenced(inv.log_path).startswith("fenced: no heartbeat for")
    assert read_exit_record(inv.log_path) is None


def test_a_renewed_lease_keeps_the_agent_running_to_its_own_end(tmp_path):
    inv = dataclasses.replace(invocation(tmp_path, ["sh", "-c", "sleep 2; exit 3"], prompt=""), fence_seconds=1.0)
    started = CommandRunner().start(inv)
    deadline = time.monotonic() + 15
    while started.poll() is None and time.monotonic() < deadline:
        renew_lease(inv.log_path, time.time())
        time.sleep(0.2)

    assert started.poll() == 3
    assert read_exit_record(inv.log_path) == 3
    assert was_fenced(inv.log_path) == ""


def test_a_lease_renewed_late_counts_from_the_heartbeat_not_from_the_renewal(tmp_path):
    """A heartbeat the database was slow to accept must not lengthen the agent's life: the file's
    time is the beat's."""
    inv = dataclasses.replace(invocation(tmp_path, ["sleep", "30"], prompt=""), fence_seconds=1.0)
    started = CommandRunner().start(inv)
    renew_lease(inv.log_path, time.time() - 5)
    wait_for(lambda: started.poll() is not None, 5, "the launcher to fence the agent")
    assert was_fenced(inv.log_path)


def test_a_process_group_is_the_attempts_only_while_its_launcher_names_the_attempt(tmp_path):
    inv = invocation(tmp_path, ["sleep", "30"], prompt="")
    started = CommandRunner().start(inv)
    try:
        wait_for(lambda: owns_group(started.pgid, inv.log_path), 10, "the launcher to run")
        assert not owns_group(started.pgid, tmp_path / "another.log"), "another attempt's files"
        assert not owns_group(os.getpgrp(), inv.log_path), "a group that is not the agent's"
    finally:
        started.stop(0.5)
    assert not owns_group(started.pgid, inv.log_path)
