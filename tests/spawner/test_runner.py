"""The command runner: prompts never pass through a shell; stop takes the whole group."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from spawner import presets
from spawner.engine import execution, redaction
from spawner.runners import CommandRunner, Invocation, RunnerError
from spawner.runners.command import build_argv
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
