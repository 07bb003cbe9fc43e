"""The coding-agent presets' rate-limit patterns on what the real CLIs printed (tests/fixtures/cli):
each CLI's give-up after a 429 is a rate limit; its normal output and its other failures are not."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from django.apps import apps

from spawner import presets
from spawner.core import agent_output
from spawner.core.ratelimit import advised_in_text, cli_rate_limited
from spawner.models import AgentRun, AgentType
from tests.spawner.helpers import launch, wait_batch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cli"
MIGRATION = importlib.import_module("spawner.migrations.0023_clirate_rate_limits")
GEMINI_MIGRATION = importlib.import_module("spawner.migrations.0024_gemini_rate_limit")
CLIS = ("claude-code", "codex", "gemini", "aider")
# The recorded give-ups after a 429, and the exit code each CLI ended with.
RATE_LIMITED = {
    "claude-code.rate-limit.log": ("claude-code", 1),
    "codex.rate-limit.log": ("codex", 1),
    "aider.rate-limit.log": ("aider", 0),
    "gemini.rate-limit.log": ("gemini", 173),
    "gemini.rate-limit-bare.log": ("gemini", 173),
}
TAIL_BYTES = 8192  # what the engine reads of the log (execution._rate_limited)


def preset(name: str) -> dict:
    return next(t for t in presets.AGENT_TYPES if t["name"] == name)


def tail(name: str) -> str:
    return (FIXTURES / name).read_bytes()[-TAIL_BYTES:].decode("utf-8", "replace")


def limited(name: str, text: str, exit_code: int) -> bool:
    t = preset(name)
    return cli_rate_limited(
        exit_code=exit_code,
        output_tail=text,
        pattern=t.get("rate_limit_pattern", ""),
        exit_codes=t.get("rate_limit_exit_codes", []),
    )


def test_every_coding_preset_has_a_pattern_that_compiles():
    import re

    for name in CLIS:
        re.compile(preset(name)["rate_limit_pattern"])
        assert len(preset(name)["rate_limit_pattern"]) <= 300, "it fits AgentType.rate_limit_pattern"
        shipped = GEMINI_MIGRATION.AFTER if name == "gemini" else MIGRATION.PATTERNS[name]
        assert shipped == preset(name)["rate_limit_pattern"], "the migrations ship the same"


@pytest.mark.parametrize(("fixture", "cli", "exit_code"), [(f, *v) for f, v in RATE_LIMITED.items() if v[1]])
def test_a_recorded_429_give_up_is_a_rate_limit(fixture, cli, exit_code):
    assert limited(cli, tail(fixture), exit_code)


def test_claude_code_and_codex_advise_no_delay_so_the_default_wait_applies():
    assert advised_in_text(tail("claude-code.rate-limit.log")) is None
    assert advised_in_text(tail("codex.rate-limit.log")) is None


def test_gemini_gives_up_on_a_429_with_its_json_error_and_advises_the_apis_delay():
    # Gemini CLI 0.61.0 exits with the error's code: 429 % 256.
    quota, bare = tail("gemini.rate-limit.log"), tail("gemini.rate-limit-bare.log")
    for text in (quota, bare):
        assert agent_output.parse_gemini(text).is_error
        assert '"code": 429' in text
    assert "exceeded your current quota" in quota and advised_in_text(quota) == 1, "'Suggested retry after 1s.'"
    # The API's bare RESOURCE_EXHAUSTED: only the JSON error's code names the 429 (the status is not printed).
    assert "RESOURCE_EXHAUSTED" not in bare and "Resource has been exhausted" in bare
    assert not limited("gemini", bare.replace('"code": 429', '"code": 0'), 173)
    old = GEMINI_MIGRATION.BEFORE
    assert not cli_rate_limited(exit_code=173, output_tail=bare, pattern=old, exit_codes=[]), "what 0024 fixed"
    assert advised_in_text(bare) is None


@pytest.mark.django_db
def test_the_gemini_migration_moves_only_the_pattern_as_shipped():
    AgentType.objects.update_or_create(name="gemini", defaults={"argv": ["gemini"], "rate_limit_pattern": ""})
    AgentType.objects.filter(name="gemini").update(rate_limit_pattern=GEMINI_MIGRATION.BEFORE)
    GEMINI_MIGRATION.gemini_429(apps, None)
    assert AgentType.objects.get(name="gemini").rate_limit_pattern == presets.GEMINI_RATE_LIMIT
    GEMINI_MIGRATION.gemini_documented(apps, None)
    assert AgentType.objects.get(name="gemini").rate_limit_pattern == GEMINI_MIGRATION.BEFORE
    AgentType.objects.filter(name="gemini").update(rate_limit_pattern="mine")
    GEMINI_MIGRATION.gemini_429(apps, None)
    assert AgentType.objects.get(name="gemini").rate_limit_pattern == "mine", "an admin's pattern is kept"


def test_aider_gives_up_on_a_429_with_exit_0_and_its_output_says_so():
    text = tail("aider.rate-limit.log")
    assert not limited("aider", text, 0), "for the exit code, 0 is a success"
    assert limited("aider", text, None), "the engine asks without it when the output reports the error"
    assert agent_output.parse_aider(text).is_error, "an API error after aider's last report: it gave up"
    assert not agent_output.parse_aider((FIXTURES / "aider.text.log").read_text()).is_error
    assert advised_in_text(text) == 32, "its last 'Retrying in 32.0 seconds...'"


# What aider prints when it gives up on a 429 (as in aider.rate-limit.log, with a short last delay).
AIDER_GIVES_UP = """Aider v0.86.2
Model: openai/gpt-4o with diff edit format
litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached for requests.
The API provider has rate limited you. Try again later or check your quotas.
Retrying in 0.5 seconds...
litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached for requests.
The API provider has rate limited you. Try again later or check your quotas.
"""


@pytest.mark.integration
def test_an_aider_that_gives_up_on_a_429_and_exits_0_waits_and_runs_again_without_spending_a_retry(cluster, tmp_path):
    """A real cluster and an agent that prints aider's give-up then exits 0, and its normal answer
    the second time: the first attempt is rate limited (not succeeded with nothing), the second
    succeeds, no retry spent."""
    gave_up, answer, once = tmp_path / "gave-up.txt", FIXTURES / "aider.text.log", tmp_path / "once"
    gave_up.write_text(AIDER_GIVES_UP)
    AgentType.objects.create(
        name="aiderish",
        argv=["sh", "-c", "{prompt}"],
        output_format="aider-text",
        rate_limit_pattern=preset("aider")["rate_limit_pattern"],
    )
    script = f"if [ -e {once} ]; then cat {answer}; else touch {once}; cat {gave_up}; fi; exit 0"
    spec = {"name": "aider-429", "agent": "aiderish", "retries": 0, "tasks": [{"key": "a", "prompt": script}]}
    batch = wait_batch(launch(json.dumps(spec), tmp_path), timeout=60)
    run = AgentRun.objects.get(batch=batch)
    first, second = run.attempts.order_by("number")
    assert first.status == "rate_limited", (first.status, first.error)
    assert first.error == "rate limited: exit code 0, retry after 0.5 s"
    assert second.status == "succeeded" and batch.status == "succeeded"
    assert run.retries == 0 and not batch.escalations.exists(), "the wait spent no retry (retries: 0)"


@pytest.mark.parametrize(
    "fixture",
    sorted(p.name for p in FIXTURES.glob("*.log") if p.name not in RATE_LIMITED),
)
@pytest.mark.parametrize("cli", CLIS)
def test_normal_output_and_other_failures_are_not_rate_limits(fixture, cli):
    """Recorded successes and failures (the API answered 500), read as if the CLI had failed."""
    assert not limited(cli, tail(fixture), 1)


def test_codex_reconnecting_after_a_429_then_failing_otherwise_is_not_a_rate_limit():
    text = (
        '{"type":"error","message":"Reconnecting... 1/5 (exceeded retry limit, last status: 429 Too Many Requests)"}\n'
        '{"type":"error","message":"We\u2019re currently experiencing high demand."}\n'
        '{"type":"turn.failed","error":{"message":"unexpected status 401 Unauthorized"}}\n'
    )
    assert not limited("codex", text, 1)


@pytest.mark.parametrize(
    "text",
    [
        # From Gemini CLI's documentation and reported output (other output formats; the recorded
        # JSON give-ups are in tests/fixtures/cli/gemini.rate-limit*.log).
        "[API Error: You have exhausted your capacity on this model. Your quota will reset after 2h52m39s.]",
        "API error: 429 - Resource exhausted",
        '{"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}',
        "429 You exceeded your current quota, please check your plan and billing details.",
    ],
)
def test_gemini_documented_rate_limit_errors(text):
    assert limited("gemini", text, 1)


@pytest.mark.django_db
def test_the_migration_sets_the_patterns_only_where_none_was_set():
    for name in CLIS:
        AgentType.objects.update_or_create(
            name=name, defaults={"argv": [name], "rate_limit_pattern": "", "rate_limit_exit_codes": []}
        )
    AgentType.objects.filter(name="codex").update(rate_limit_pattern="my own")
    AgentType.objects.filter(name="gemini").update(rate_limit_exit_codes=[75])
    AgentType.objects.update_or_create(name="my-claude", defaults={"argv": ["claude"], "rate_limit_pattern": ""})

    MIGRATION.cli_rate_limits(apps, None)

    patterns = dict(AgentType.objects.values_list("name", "rate_limit_pattern"))
    assert patterns["claude-code"] == presets.CLAUDE_RATE_LIMIT
    assert patterns["aider"] == presets.AIDER_RATE_LIMIT
    assert patterns["codex"] == "my own", "an admin's pattern is kept"
    assert patterns["gemini"] == "", "an admin's exit codes: their rate-limit settings are left alone"
    assert patterns["my-claude"] == ""

    MIGRATION.no_rate_limits(apps, None)
    assert AgentType.objects.get(name="claude-code").rate_limit_pattern == ""
    assert AgentType.objects.get(name="codex").rate_limit_pattern == "my own"
