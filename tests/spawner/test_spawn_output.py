"""What `manage.py spawn` prints, and how often it reads and checks the spec."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from rich.console import Console

from spawner import services, spec
from spawner.engine import cluster
from spawner.management.commands import spawn
from spawner.models import Batch
from spawner.spec import reading
from spawner.states import BatchStatus
from tests.spawner.helpers import launch

ROOT = Path(__file__).resolve().parents[2]

GOOD = "name: two\nagent: sh\ntasks:\n  - {key: a, prompt: 'echo a'}\n  - {key: b, prompt: 'echo b'}\n"


def test_errors_quoting_brackets_are_printed_as_written(agent_types, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: n\ntasks:\n  - {key: a, agent: '[/x] [bold]', prompt: hi}\n")

    with pytest.raises(CommandError, match="1 error"):
        call_command("spawn", str(path), "--plan")

    assert "unknown agent type '[/x] [bold]'" in capsys.readouterr().out


def test_a_plan_whose_name_and_patterns_hold_brackets_prints(agent_types, tmp_path, capsys):
    path = tmp_path / "odd.yaml"
    path.write_text("name: '[/odd]'\nagent: sh\ntasks:\n  - {key: a, files: ['[/]x']}\n  - {key: b, files: ['[/]x']}\n")

    with pytest.raises(CommandError):
        call_command("spawn", str(path), "--plan")

    assert "'[/]x'" in capsys.readouterr().out


def test_the_spec_is_parsed_once_and_checked_once_per_launch(agent_types, tmp_path, monkeypatch):
    path = tmp_path / "two.yaml"
    path.write_text(GOOD)
    calls = {"parse": 0, "check": 0}
    parse, check = reading.parse_text, services.batch_check

    def counting_parse(text):
        calls["parse"] += 1
        return parse(text)

    def counting_check(*args, **kwargs):
        calls["check"] += 1
        return check(*args, **kwargs)

    monkeypatch.setattr(spec, "parse_text", counting_parse)
    monkeypatch.setattr(services, "batch_check", counting_check)
    monkeypatch.setattr(cluster, "ensure_cluster", lambda: None)
    monkeypatch.setattr(spawn.reaper, "live_clusters", lambda: [1])

    call_command("spawn", str(path), stdout=io.StringIO())

    assert calls == {"parse": 1, "check": 1}
    batch = Batch.objects.get()
    assert batch.spec["tasks"][1]["key"] == "b" and batch.spec_text == GOOD


def test_the_progress_title_fits_a_narrow_console_on_one_line():
    for width in (20, 40, 60, 200):
        title = spawn.progress_title(12, "a batch with a rather long name " * 3, 3, 8, width)
        assert len(title.plain) <= width
        assert "3/8" in title.plain or width < 25
    assert spawn.progress_title(1, "short", 4, 8, 80).plain == f"batch #1 short [{'█' * 15}{'░' * 15}] 4/8"


def test_the_live_progress_does_not_wrap_in_a_narrow_console(agent_types, tmp_path):
    batch = launch("name: " + "n" * 60 + "\nagent: sh\ntasks: [{key: a, prompt: 'echo a'}]\n", tmp_path)
    command = spawn.Command()
    out = io.StringIO()
    command.console = Console(file=out, width=40, force_terminal=True, color_system=None)

    command.console.print(command._progress(batch))

    first = out.getvalue().splitlines()[0]
    assert first.startswith("batch #") and "]" in first and first.endswith("0/1")


def test_piped_output_ends_the_last_frame_before_the_summary(agent_types, tmp_path):
    batch = launch(GOOD, tmp_path)
    Batch.objects.filter(id=batch.id).update(status=BatchStatus.SUCCEEDED)
    command = spawn.Command()
    out = io.StringIO()
    command.console = Console(file=out, width=80, force_terminal=False)

    command._follow(batch)
    command.console.print("SUMMARY")

    assert "\nSUMMARY\n" in out.getvalue()


@pytest.mark.parametrize(
    ("parallel", "sequential", "words"),
    [
        (1.0, 2.5, "parallel is 2.50x faster than sequential"),
        (2.1, 2.0, "parallel is 1.05x slower than sequential"),
        (1.0, 1.0, "parallel is 1.00x faster than sequential"),
    ],
)
def test_a_comparison_says_slower_when_parallel_lost(parallel, sequential, words):
    assert spawn.comparison_words(parallel, sequential) == words


def test_spawn_on_a_database_that_is_not_set_up_says_to_migrate(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.sqlite3'}"}
    out = subprocess.run(
        [sys.executable, "manage.py", "spawn", "examples/sleepers.yaml", "--plan"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "run `python manage.py migrate` first" in out.stderr and "Traceback" not in out.stderr
