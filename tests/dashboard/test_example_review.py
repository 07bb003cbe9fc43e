"""examples/agents/review_agent.py writes the documented result format, and its fan-in reads well."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from spawner import services
from tests.conftest import ROOT
from tests.dashboard.conftest import end_with_results

AGENT = ROOT / "examples" / "agents" / "review_agent.py"
CODE = """\
import subprocess


def run(cmd, seen=[]):
    try:
        subprocess.run(cmd, shell=True)
    except Exception:
        pass
"""


def review(tmp_path, *args: str, env: dict | None = None) -> dict:
    result_file = tmp_path / f"result-{len(list(tmp_path.iterdir()))}.json"
    env = {**os.environ, **(env or {}), "SPAWNER_RESULT_FILE": str(result_file)}
    subprocess.run([sys.executable, str(AGENT), *args], cwd=tmp_path, env=env, check=True, capture_output=True)
    return json.loads(result_file.read_text())


@pytest.fixture
def code(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "tool.py").write_text(CODE)
    return tmp_path


def test_each_focus_writes_the_documented_result_format(code):
    security = review(code, "--focus", "security", "app")
    assert set(security) == {"summary", "verdict", "findings", "suggestions", "tokens", "cost"}
    assert security["verdict"] == "fail"
    [shell] = security["findings"]
    assert (shell["severity"], shell["title"], shell["file"], shell["line"]) == (
        "high",
        "subprocess runs through a shell",
        "app/tool.py",
        6,
    )
    correctness = review(code, "--focus", "correctness", "app")
    assert {f["title"] for f in correctness["findings"]} == {"mutable default argument", "broad exception handler"}
    assert correctness["verdict"] == "warn"


def test_the_synthesis_combines_its_dependencies_results(code):
    deps = {
        key: {"status": "succeeded", "result": review(code, "--focus", key, "app")}
        for key in ("security", "correctness", "maintainability")
    }
    deps_file = code / "deps.json"
    deps_file.write_text(json.dumps(deps))
    synthesis = review(code, "--synthesize", env={"SPAWNER_DEPS_FILE": str(deps_file)})
    assert synthesis["verdict"] == "fail"
    assert synthesis["summary"].startswith("3 reviews combined: 3 distinct findings")
    assert "1 raised by more than one reviewer" in synthesis["summary"]
    assert synthesis["suggestions"][0] == "high: subprocess runs through a shell at app/tool.py:6 (seen by security)"


def test_the_review_example_launches_and_its_result_reads_well(signed_in, member, agent_types, code):
    text = (ROOT / "examples" / "review.yaml").read_text()
    batch_spec = services.spec_load(text, is_admin=True)
    assert [t.key for t in batch_spec.tasks] == ["security", "correctness", "maintainability", "synthesis"]
    batch = services.batch_launch(batch_spec=batch_spec, base_dir=ROOT / "examples", owner=member, spec_text=text)
    results = {key: review(code, "--focus", key, "app") for key in ("security", "correctness", "maintainability")}
    batch = end_with_results(batch, results)

    html = signed_in.get(f"/batches/{batch.id}/result/").content.decode()
    folded = html.split("broad exception handler", 1)[1].split("</tr>", 1)[0]
    assert "correctness</a>" in folded and "maintainability</a>" in folded, "two reviewers, one finding"
    markdown = signed_in.get(f"/batches/{batch.id}/result.md").content.decode()
    assert "| high | subprocess runs through a shell | app/tool.py | 6 | security |" in markdown
