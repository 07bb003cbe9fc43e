"""A `path` prompt (pytest, ruff) cannot reach outside the run's working directory."""

from __future__ import annotations

import pytest

from spawner import presets, services, spec
from spawner.models import AgentRun, AgentType, Batch
from tests.spawner.helpers import launch, wait_batch

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def lister(db):
    """A path-prompt agent type that runs anywhere: `ls -- PROMPT`."""
    return AgentType.objects.create(name="lister", argv=["ls", "--", "{prompt}"], prompt_kind="path")


@pytest.fixture
def workdir(tmp_path):
    work = tmp_path / "work"
    (work / "tests").mkdir(parents=True)
    (work / "tests" / "test_a.py").write_text("def test_x(): pass\n")
    (work / "escape").symlink_to("/etc")
    return work


def launch_as_user(text: str, base_dir):
    batch_spec = services.spec_load(text, is_admin=False)
    return services.batch_launch(batch_spec=batch_spec, base_dir=base_dir, spec_text=text, confine=True)


def one_task(prompt: str, agent: str = "lister") -> str:
    return f"name: p\nagent: {agent}\ntasks:\n  - key: probe\n    prompt: '{prompt}'\n"


def test_pytest_and_ruff_take_path_prompts_in_the_presets_and_in_the_migrated_rows(db):
    assert {t["name"] for t in presets.AGENT_TYPES if t.get("prompt_kind") == "path"} == {"pytest", "ruff"}
    kinds = dict(AgentType.objects.values_list("name", "prompt_kind"))
    assert kinds["pytest"] == kinds["ruff"] == "path"
    assert kinds["claude-code"] == kinds["shell"] == "text"


@pytest.mark.parametrize(
    "prompt, why",
    [
        ("/tmp/x/test_evil.py", "outside the working directory"),
        ("/tmp/x/test_evil.py::test_it", "outside the working directory"),
        ("../../x/test_evil.py", "outside the working directory"),
        ("escape/passwd", "outside the working directory"),
        ("-p evil_plugin", "not '-'"),
        ("@/tmp/args.txt", "not '@'"),
    ],
)
def test_a_path_prompt_leaving_the_working_directory_is_a_field_error_at_launch(lister, workdir, prompt, why):
    with pytest.raises(spec.SpecInvalid) as caught:
        launch_as_user(one_task(prompt), workdir)
    errors = [e for e in caught.value.errors if e.field == "prompt"]
    assert [(e.task, e.where) for e in errors] == [("probe", "task 'probe'")]
    assert why in errors[0].message
    assert not Batch.objects.exists()


def test_the_pytest_preset_refuses_a_test_file_outside_the_working_directory(db, workdir):
    with pytest.raises(spec.SpecInvalid, match=r"task 'probe': prompt: '/tmp/x/test_evil.py' is outside"):
        launch_as_user(one_task("/tmp/x/test_evil.py", agent="pytest"), workdir)


@pytest.mark.parametrize("prompt", ["", "tests", "tests/test_a.py::test_x", "./tests/../tests/test_a.py"])
def test_paths_inside_the_working_directory_launch(lister, workdir, prompt):
    batch = launch_as_user(one_task(prompt), workdir)
    assert AgentRun.objects.get(batch=batch).prompt == prompt


def test_a_text_prompt_is_not_treated_as_a_path(db, workdir, agent_types):
    batch = launch_as_user(one_task("/tmp/anything --at all", agent="sh"), workdir)
    assert batch.runs.count() == 1


@pytest.mark.integration
def test_a_path_filled_in_from_a_dependency_is_checked_again_at_spawn(cluster, agent_types, lister, workdir):
    text = """
name: deps
tasks:
  - {key: a, agent: sh, prompt: "printf /etc"}
  - {key: b, agent: lister, prompt: "{{ deps.a.output }}", depends_on: [a]}
"""
    batch = wait_batch(launch(text, workdir))
    b = AgentRun.objects.get(batch=batch, key="b")
    assert b.status == "failed"
    assert "prompt refused for agent type 'lister'" in b.error and "'/etc' is outside" in b.error
    log = next((workdir.parent / "logs").rglob("b.1.log")).read_text()
    assert "passwd" not in log and "could not start" in log
