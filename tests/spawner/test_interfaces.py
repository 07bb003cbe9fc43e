"""The ways in: the spawn command, the Python API, serve, and the presets."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from django.core.management import CommandError, call_command

from spawner.api import ParallelSpawner
from spawner.models import AgentType, Batch, Role, RunAttempt
from tests.conftest import ROOT, database_url_for_subprocess
from tests.spawner.helpers import launch, wait_batch

GOOD = """
name: two
agent: sh
tasks:
  - {key: a, prompt: "echo a"}
  - {key: b, prompt: "echo b", depends_on: [a]}
"""


def test_plan_prints_waves_and_checks_and_runs_nothing(agent_types, tmp_path, capsys):
    path = tmp_path / "two.yaml"
    path.write_text(GOOD)

    call_command("spawn", str(path), "--plan")

    out = capsys.readouterr().out
    assert "wave 1: a" in out and "wave 2: b" in out
    assert "critical path: a -> b" in out
    assert "aggregation defined" in out
    assert not Batch.objects.exists()


def test_a_bad_spec_names_the_task_and_field_and_launches_nothing(agent_types, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("depends_on: [a]", "depends_on: [zzz]"))

    with pytest.raises(CommandError, match="1 error"):
        call_command("spawn", str(path), "--wait")

    out = capsys.readouterr().out
    assert "task 'b'" in out and "depends_on" in out and "unknown dependency 'zzz'" in out
    assert not Batch.objects.exists()


def test_an_unreadable_file_is_a_clear_error(db, tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        call_command("spawn", str(tmp_path / "missing.yaml"))


def test_an_unavailable_agent_type_is_refused_at_launch(agent_types, tmp_path, capsys):
    AgentType.objects.create(name="ghost", argv=["no-such-binary-here", "{prompt}"])
    path = tmp_path / "ghost.yaml"
    path.write_text("name: g\ntasks:\n  - {key: a, agent: ghost, prompt: hi}\n")

    with pytest.raises(CommandError, match="nothing was launched"):
        call_command("spawn", str(path), "--wait")

    assert "not available on this server" in capsys.readouterr().out
    assert not Batch.objects.exists()


@pytest.mark.integration
def test_spawn_waits_and_prints_json(cluster, agent_types, tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text(GOOD)
    out = io.StringIO()

    call_command("spawn", str(path), "--wait", "--json", stdout=out)

    summary = json.loads(out.getvalue())
    assert summary["status"] == "succeeded"
    assert [r["key"] for r in summary["runs"]] == ["a", "b"]
    assert summary["timings"]["wall_seconds"] > 0


@pytest.mark.integration
def test_spawn_exits_non_zero_when_the_batch_fails(cluster, agent_types, tmp_path):
    path = tmp_path / "fail.yaml"
    path.write_text("name: f\nagent: sh\ntasks:\n  - {key: a, prompt: 'exit 4'}\n")

    with pytest.raises(CommandError, match="ended failed"):
        call_command("spawn", str(path), "--wait", stdout=io.StringIO())


@pytest.mark.integration
def test_compare_runs_it_again_sequentially(cluster, agent_types, tmp_path):
    path = tmp_path / "par.yaml"
    tasks = "".join(f"  - {{key: t{i}, prompt: 'sleep 0.5'}}\n" for i in range(3))
    path.write_text("name: p\nagent: sh\ntasks:\n" + tasks)
    out = io.StringIO()

    call_command("spawn", str(path), "--compare", "--json", stdout=out)

    both = json.loads(out.getvalue())
    par, seq = both["parallel"], both["sequential"]
    assert seq["mode"] == "sequential"
    assert Batch.objects.get(id=seq["batch"]).sequential_of_id == par["batch"]
    assert seq["timings"]["wall_seconds"] > 2 * par["timings"]["wall_seconds"]


@pytest.mark.integration
def test_compare_prints_the_one_speedup_the_compare_page_shows(cluster, agent_types, tmp_path, capsys):
    from spawner import selectors

    path = tmp_path / "par.yaml"
    tasks = "".join(f"  - {{key: t{i}, prompt: 'sleep 0.4'}}\n" for i in range(3))
    path.write_text("name: p\nagent: sh\ntasks:\n" + tasks)
    call_command("spawn", str(path), "--compare")

    text = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    printed = re.findall(r"parallel is (\d+\.\d\d)x faster than sequential", text)
    parallel = Batch.objects.filter(sequential_of__isnull=True).latest("id")
    measured = selectors.measured_comparison(parallel, Batch.objects.get(sequential_of=parallel))
    assert printed == [f"{measured['speedup']:.2f}"], text
    assert "parallelism" in text and "speedup 1.00x" not in text  # no second, different "speedup"


@pytest.mark.integration
def test_the_python_api_returns_partial_failures(cluster, agent_types, tmp_path):
    async def main():
        spawner = ParallelSpawner(tmp_path, max_parallel=3)
        await spawner.spawn_parallel(tasks=["echo one", "exit 1", "echo three"], agent_type="sh")
        return await spawner.wait_all(timeout=30)

    summary = asyncio.run(main())

    assert summary["all_succeeded"] is False
    assert len(summary["succeeded"]) == 2
    assert len(summary["failed"]) == 1
    assert summary["batches"][0]["status"] == "partial"


@pytest.mark.integration
def test_a_dependent_task_sees_its_dependencies_results(cluster, agent_types, tmp_path):

    spec = r"""
name: synth
agent: sh
tasks:
  - {key: scan, prompt: "echo '{\"summary\": \"3 issues\", \"verdict\": \"warn\"}' > \"$SPAWNER_RESULT_FILE\""}
  - key: synthesis
    depends_on: [scan]
    prompt: "echo 'scan said: {{ deps.scan.summary }} ({{ deps.scan.verdict }})'; cat \"$SPAWNER_DEPS_FILE\""
"""
    batch = wait_batch(launch(spec, tmp_path))

    synthesis = batch.runs.get(key="synthesis")
    assert synthesis.status == "succeeded"
    assert "scan said: 3 issues (warn)" in synthesis.output_tail
    assert '"verdict": "warn"' in synthesis.output_tail


@pytest.mark.integration
def test_an_agent_type_cap_and_stagger_hold_across_the_batch(cluster, agent_types, tmp_path):
    from tests.spawner.helpers import launch, wait_batch

    AgentType.objects.create(name="capped", argv=["sh", "-c", "{prompt}"], max_concurrency=2, spawn_stagger_seconds=0.3)
    spec = "name: cap\nagent: capped\nmax_parallel: 5\ntasks:\n" + "".join(
        f"  - {{key: t{i}, prompt: 'sleep 0.6'}}\n" for i in range(5)
    )
    batch = wait_batch(launch(spec, tmp_path), timeout=40)

    spans = sorted(RunAttempt.objects.filter(run__batch=batch).values_list("started_at", "finished_at"))
    assert batch.status == "succeeded"
    for start, _ in spans:
        assert sum(1 for s, e in spans if s <= start < e) <= 2
    for (a, _), (b, _) in zip(spans, spans[1:], strict=False):
        assert (b - a).total_seconds() >= 0.29


@pytest.mark.integration
def test_stopping_the_cluster_hands_running_attempts_back(cluster, agent_types, tmp_path):
    from tests.spawner.helpers import launch, wait_batch, wait_run

    marker = tmp_path / "first"
    script = f"if [ -f {marker} ]; then echo again; else touch {marker}; sleep 60; fi"
    batch = launch(f"name: s\nagent: sh\nretries: 0\ntasks:\n  - {{key: a, prompt: {script!r}}}\n", tmp_path)
    wait_run(batch, "a", "running")

    cluster.stop()  # drains for SPAWNER_DRAIN_SECONDS, then hands back without spending a retry
    first = RunAttempt.objects.get(run__batch=batch, number=1)
    assert first.status == "handed_back"
    assert "the cluster running it stopped" in first.error
    cluster.start()

    assert wait_batch(batch).status == "succeeded"


def test_presets_install_the_agent_types_and_roles(db, capsys):
    AgentType.objects.all().delete()
    Role.objects.all().delete()

    call_command("spawner_presets")

    names = set(AgentType.objects.values_list("name", flat=True))
    assert {"claude-code", "codex", "gemini", "aider", "pytest", "ruff", "shell"} <= names
    assert AgentType.objects.get(name="shell").admin_only
    assert set(Role.objects.values_list("name", flat=True)) >= {
        "explorer",
        "implementer",
        "tester",
        "reviewer",
        "documenter",
        "debugger",
        "researcher",
    }
    out = capsys.readouterr().out
    assert "claude-code" in out and ("not available" in out or "available" in out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_serve_runs_web_and_workers_and_stops_both_on_ctrl_c(tmp_path):
    import psutil

    port = _free_port()
    env = {**os.environ, "DATABASE_URL": database_url_for_subprocess(), "SPAWNER_LOG_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        assert page.status == 200
        children = psutil.Process(proc.pid).children()
        assert len(children) == 2

        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=40)
        out = proc.stdout.read()
        assert "sign in as  admin /" in out
        for child in children:
            assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_api_gives_the_same_prompt_twice_distinct_keys():
    from spawner.api import _task_dict, _unique_keys

    tasks = _unique_keys([_task_dict(i, t) for i, t in enumerate(["go", "go", "go"])])
    assert [t["key"] for t in tasks] == ["go", "go-2", "go-3"]


@pytest.mark.integration
def test_the_python_api_can_race_one_prompt(cluster, agent_types, tmp_path):
    async def main():
        spawner = ParallelSpawner(tmp_path, max_parallel=3, aggregation="first_success")
        await spawner.spawn_parallel(tasks=["sleep 0.2", "sleep 0.2", "sleep 0.2"], agent_type="sh")
        return await spawner.wait_all(timeout=30)

    summary = asyncio.run(main())
    assert summary["batches"][0]["status"] == "succeeded"
    assert Batch.objects.get().aggregation_result.data["winner"].startswith("sleep-0.2")
