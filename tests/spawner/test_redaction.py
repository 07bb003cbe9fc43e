"""A secret the agent prints is stored nowhere: tail, result, errors, events, aggregation, log file."""

from __future__ import annotations

import json

import pytest

from spawner.engine import redaction
from spawner.models import AgentRun, AgentType, Aggregation, RunEvent
from tests.spawner.helpers import launch, wait_batch, wait_for

pytestmark = pytest.mark.timeout(120)
SECRET = "s3cr3t-VALUE-Ünïcode-42"
NAME = "SPAWNER_TEST_SECRET"


@pytest.fixture
def leaky_cluster(transactional_db, monkeypatch, request):
    """A cluster whose environment holds the secret, and an agent type that names it."""
    monkeypatch.setenv(NAME, SECRET)
    cluster = request.getfixturevalue("cluster")  # first: it sets up the transactional database
    request.getfixturevalue("agent_types")
    AgentType.objects.create(name="leaky", argv=["sh", "-c", "{prompt}"], secret_names=[NAME])
    return cluster


RESULT = (
    'printf \'{"summary": "saw %s", "findings": [{"severity": "high", "title": "%s", "detail": "x"}]}\' '
    f'"${NAME}" "${NAME}" > "$SPAWNER_RESULT_FILE"'
)
LEAK = f"""
name: leak
agent: leaky
aggregation: merge
tasks:
  - key: talker
    prompt: |
      printf 'key is %s\\n' "${NAME}"
      printf 'stderr %s\\n' "${NAME}" >&2
      printf '%s' "${NAME}" | head -c 7; sleep 0.4; printf '%s\\n' "${NAME}" | tail -c +8
      {RESULT}
      echo running-on; sleep 1.5; echo done
  - key: failer
    prompt: 'echo "$SPAWNER_TEST_SECRET"; exit 3'
"""


@pytest.mark.integration
def test_a_printed_secret_is_masked_in_everything_stored_and_in_the_log_file(leaky_cluster, tmp_path):
    batch = launch(LEAK, tmp_path)
    # While it runs, the tail shown live is masked already.
    running = wait_for(
        lambda: AgentRun.objects.filter(batch=batch, key="talker", output_tail__contains="running-on").first(),
        30,
        "the live tail",
    )
    assert SECRET not in running.output_tail and "key is ***" in running.output_tail
    batch = wait_batch(batch)
    assert batch.status == "partial"

    talker = AgentRun.objects.get(batch=batch, key="talker")
    assert "key is ***" in talker.output_tail and "stderr ***" in talker.output_tail
    assert talker.result["summary"] == "saw ***" and talker.result["findings"][0]["title"] == "***"
    stored = [
        json.dumps(list(AgentRun.objects.filter(batch=batch).values()), default=str, ensure_ascii=False),
        json.dumps(list(RunEvent.objects.filter(batch=batch).values("data")), ensure_ascii=False),
        json.dumps(Aggregation.objects.get(batch=batch).data, ensure_ascii=False),
    ]
    for text in stored:
        assert SECRET not in text
        assert SECRET[:7] + "\n" not in text  # nor the half printed before the pause
    logs = list((tmp_path / "logs").rglob("*.log"))
    assert len(logs) == 2
    for path in [*logs, *(tmp_path / "logs").rglob("*.result.json")]:
        data = path.read_bytes()
        assert SECRET.encode() not in data and b"***" in data, path


def test_the_download_stream_masks_a_log_that_is_still_being_written(tmp_path):
    log = tmp_path / "run.log"
    log.write_bytes(b"\xff binary \x00 " + SECRET.encode() * 3 + b" tail " + SECRET.encode()[:5])
    for chunk in (1, 3, 7, 64):
        out = b"".join(redaction.stream_file(log, [SECRET], chunk_bytes=chunk))
        assert SECRET.encode() not in out and out.startswith(b"\xff binary \x00 ***") and b" tail " in out


def test_a_range_of_a_log_cut_through_a_secret_shows_none_of_it(tmp_path):
    log = tmp_path / "run.log"
    log.write_bytes(b"a" * 100 + SECRET.encode() + b"b" * 100)
    middle = 100 + len(SECRET) // 2
    assert redaction.read_range(log, 0, middle, [SECRET]) == b"a" * 100 + b"***"
    assert redaction.read_range(log, middle, 10_000, [SECRET]) == b"***" + b"b" * 100
    assert redaction.read_tail(log, 110, [SECRET]) == "***" + "b" * 100


def test_the_log_rewrite_masks_in_place_and_leaves_a_clean_log_alone(tmp_path):
    log = tmp_path / "run.log"
    log.write_bytes(b"x" * 200_000 + SECRET.encode() + b"y")
    assert redaction.rewrite_file(log, [SECRET]) is True
    assert log.read_bytes() == b"x" * 200_000 + b"***y"
    assert redaction.rewrite_file(log, [SECRET]) is False
    assert [p.name for p in tmp_path.iterdir()] == ["run.log"]


def test_secrets_shorter_than_four_characters_are_not_masked(monkeypatch, db):
    monkeypatch.setenv("SHORT_ONE", "abc")
    monkeypatch.setenv("LONG_ONE", "abcd1234")
    agent_type = AgentType(name="t", argv=["true"], secret_names=["SHORT_ONE", "LONG_ONE", "UNSET_ONE"])
    assert redaction.secret_values(agent_type) == ["abcd1234"]
