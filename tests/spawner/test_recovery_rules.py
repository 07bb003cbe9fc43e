"""The pure rules of recovery: what a hand-back costs, what an exit record proves, what to resend."""

from __future__ import annotations

import pytest

from spawner.core import recovery
from spawner.runners import CommandRunner, Invocation
from spawner.runners.command import read_exit_record
from tests.spawner.helpers import wait_for


@pytest.mark.parametrize(("text", "code"), [("0\n", 0), ("137\n", 137), ("", None), ("1", None), ("x\n", None)])
def test_only_a_complete_exit_record_counts(text, code):
    assert recovery.parse_exit_record(text) == code


def test_a_backlog_in_the_broker_is_never_resent():
    assert not recovery.unheld_stranded(idle_seconds=600, lease=30, broker_waiting=5)
    assert not recovery.unheld_stranded(idle_seconds=10, lease=30, broker_waiting=0)
    assert recovery.unheld_stranded(idle_seconds=31, lease=30, broker_waiting=0)
    assert recovery.holder_dead("h:1", {"h:2"}) and not recovery.holder_dead("h:1", {"h:1"})


def _invocation(tmp_path, argv):
    return Invocation(
        argv_template=tuple(argv),
        prompt="",
        prompt_via="arg",
        key="k",
        cwd=tmp_path,
        log_path=tmp_path / "k.1.log",
        result_path=tmp_path / "r",
        prompt_path=tmp_path / "p",
        env={"PATH": "/usr/bin:/bin"},
    )


def test_the_shim_records_the_agents_own_exit_code(tmp_path):
    started = CommandRunner().start(_invocation(tmp_path, ["sh", "-c", "exit 7"]))
    assert wait_for(lambda: started.poll() is not None, 10, "the agent to end") and started.poll() == 7
    assert read_exit_record(tmp_path / "k.1.log") == 7


def test_a_stopped_agent_leaves_no_exit_record(tmp_path):
    started = CommandRunner().start(_invocation(tmp_path, ["sleep", "30"]))
    started.stop(grace=1)
    assert read_exit_record(tmp_path / "k.1.log") is None
