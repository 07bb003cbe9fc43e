"""The pure reader of coding-agent CLI output, on real recorded output (tests/fixtures/cli)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spawner.core import agent_output
from spawner.core.agent_output import parse, result_from_message

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cli"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_claude_json_final_message_and_usage():
    out = parse("claude-json", fixture("claude-code.text.log"))

    assert out.final_message == "Greeted the world in hello.txt."
    assert not out.is_error
    u = out.usage
    assert u.input_tokens > 0 and u.output_tokens > 0
    assert u.cache_read_tokens > 0 and u.cache_write_tokens > 0
    assert u.cost_usd > 0
    assert u.models and u.turns == 5
    assert out.session_id


def test_claude_json_fenced_result():
    out = parse("claude-json", fixture("claude-code.fenced.log"))
    result = result_from_message(out.final_message, out.usage)

    assert result["summary"] == "one race" and result["verdict"] == "warn"
    assert result["findings"][0]["title"] == "double dispatch"
    assert result["tokens"] == out.usage.tokens and result["cost"] == out.usage.cost_usd


def test_codex_jsonl_final_message_and_usage_among_stderr_lines():
    text = fixture("codex.fenced.log")
    assert text.startswith("WARNING"), "stderr is interleaved with the events"
    out = parse("codex-jsonl", text)

    assert out.final_message.startswith("Greeted the world.")
    assert out.usage.turns == 1
    assert out.usage.input_tokens > 0 and out.usage.cache_read_tokens > 0 and out.usage.output_tokens > 0
    assert out.usage.cost_usd is None, "codex reports no cost"
    assert result_from_message(out.final_message)["summary"] == "greeted"


def test_gemini_json_pretty_printed_after_other_output():
    doc = {
        "session_id": "s",
        "response": "All done.",
        "stats": {"models": {"gemini-x": {"tokens": {"prompt": 100, "candidates": 7, "cached": 40, "thoughts": 5}}}},
    }
    out = parse("gemini-json", "Loaded cached credentials.\n" + json.dumps(doc, indent=2) + "\n")

    assert out.final_message == "All done."
    assert (out.usage.input_tokens, out.usage.cache_read_tokens, out.usage.output_tokens) == (60, 40, 12)


@pytest.mark.parametrize(
    ("name", "summary"), [("gemini.fenced.log", "greeting written"), ("gemini.text.log", "greeted")]
)
def test_gemini_json_recorded_router_and_main_model_each_with_its_tokens(name, summary):
    text = fixture(name)
    assert text.startswith("Warning:"), "stderr is interleaved with the pretty-printed object"
    out = parse("gemini-json", text)
    doc = json.loads(text[text.index("\n{") :])

    assert not out.is_error and out.session_id == doc["session_id"]
    assert result_from_message(out.final_message) == {"summary": summary, "verdict": "pass"}
    # The model router (flash-lite) and the model it picked: each one's tokens as Gemini CLI counted them.
    assert out.usage.models == list(doc["stats"]["models"]) and len(out.usage.models) == 2
    for model, split in out.usage.per_model.items():
        tokens = doc["stats"]["models"][model]["tokens"]
        assert split["input_tokens"] == tokens["input"] + tokens["tool"] > 0, "the prompt less the cached tokens"
        assert split["cache_read_tokens"] == tokens["cached"] > 0
        assert split["output_tokens"] == tokens["candidates"] + tokens["thoughts"] > tokens["candidates"]
    assert out.usage.tokens == sum(m["tokens"]["total"] for m in doc["stats"]["models"].values())
    assert out.usage.cost_usd is None, "Gemini CLI reports no cost"


def test_gemini_json_tool_use_prompt_counts_as_input_and_thoughts_as_output():
    stats = {"prompt": 1000, "cached": 200, "input": 800, "candidates": 50, "thoughts": 30, "tool": 40, "total": 1120}
    doc = {"response": "done", "stats": {"models": {"gemini-x": {"tokens": stats}}}}
    out = parse("gemini-json", json.dumps(doc))
    split = out.usage.per_model["gemini-x"]
    assert (split["input_tokens"], split["cache_read_tokens"], split["output_tokens"]) == (840, 200, 80)


def test_gemini_json_recorded_rate_limit_give_up_is_an_error():
    out = parse("gemini-json", fixture("gemini.rate-limit.log"))

    assert out.is_error and out.final_message is None
    assert out.usage.tokens == 0


def test_aider_text_one_message_usage_cost_and_final_message():
    out = parse("aider-text", fixture("aider.text.log"))

    # "Tokens: 2.5k sent, 76 received. Cost: $0.0069 message, $0.0069 session."
    assert (out.usage.input_tokens, out.usage.output_tokens) == (2500, 76)
    assert out.usage.cost_usd == 0.0069
    assert out.usage.models == ["openai/gpt-4o"] and out.usage.turns == 1
    assert out.final_message.startswith("minus adds; it should subtract.\n\ncalc.py\n```python\n<<<<<<< SEARCH")
    assert "Tokens:" not in out.final_message and "Added calc.py" not in out.final_message
    assert "Applied edit" not in out.final_message
    result = result_from_message(out.final_message, out.usage)
    assert result == {
        "summary": "minus added where it should subtract; fixed",
        "verdict": "pass",
        "tokens": 2576,
        "cost": 0.0069,
    }


def test_aider_text_sums_the_messages_and_takes_the_session_cost_from_the_last():
    out = parse("aider-text", fixture("aider.reflection.log"))

    # 2.5k + 2.6k sent, 45 + 83 received; "$0.0074 message, $0.01 session" last.
    assert (out.usage.input_tokens, out.usage.output_tokens, out.usage.turns) == (5100, 128, 2)
    assert out.usage.cost_usd == 0.01
    # After a reflection, aider's notes (the edit error it sent back) come before the answer.
    assert out.final_message.startswith("The LLM did not conform to the edit format.")
    assert out.final_message.endswith('"verdict": "pass"}\n```')
    assert "I will fix the sign." not in out.final_message, "the first answer is not the final message"
    assert result_from_message(out.final_message)["verdict"] == "pass"


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        # aider's format_tokens: as is under 1,000, one decimal under 10,000, else rounded to the thousand.
        ("Tokens: 950 sent, 12 received.", (950, 0, 0, 12, None)),
        ("Tokens: 12k sent, 1.2k received. Cost: $0.05 message, $0.05 session.", (12000, 0, 0, 1200, 0.05)),
        # With both cache figures aider puts the cost on the next line.
        (
            "Tokens: 9.8k sent, 1.5k cache write, 6.0k cache hit, 250 received.\nCost: $0.02 message, $0.31 session.",
            (2300, 1500, 6000, 250, 0.31),
        ),
        (
            "Tokens: 3.1k sent, 2.0k cache hit, 99 received. Cost: $0.0011 message, $0.0011 session.",
            (1100, 0, 2000, 99, 0.0011),
        ),
    ],
)
def test_aider_text_reports(report, expected):
    out = parse("aider-text", f"Aider v0.86.2\nModel: openai/x with whole edit format\n\nDone.\n\n{report}\n")
    u = out.usage
    assert (u.input_tokens, u.cache_write_tokens, u.cache_read_tokens, u.output_tokens, u.cost_usd) == expected
    assert out.final_message == "Done." and u.models == ["openai/x"]


def test_aider_text_without_a_report_is_an_error_when_it_gave_up_on_the_api():
    found = parse("aider-text", fixture("aider.rate-limit.log"))
    assert found.is_error and found.usage is None and found.final_message is None, "it gave up before any answer"


@pytest.mark.parametrize("fmt", ["", "unknown", "claude-json", "codex-jsonl", "gemini-json", "aider-text"])
def test_nothing_to_read_is_none_not_an_error(fmt):
    assert parse(fmt, "plain text\n{not json\n\x00\n") is None


def test_a_truncated_last_line_is_skipped():
    text = fixture("claude-code.text.log")
    assert parse("claude-json", text[: len(text) // 2]) is None


def test_result_from_message_plain_text_is_a_bounded_summary():
    assert result_from_message("  Done.  ") == {"summary": "Done."}
    long = result_from_message("x" * 10_000)["summary"]
    assert len(long) == agent_output.SUMMARY_MAX_CHARS and long.endswith("…")


def test_result_from_message_takes_the_last_fenced_result():
    message = (
        'First draft:\n```json\n{"summary": "old"}\n```\n'
        'Final:\n```json\n{"verdict": "pass", "findings": [{"title": "t"}]}\n```'
    )
    result = result_from_message(message)
    assert result["verdict"] == "pass" and result["findings"] == [{"title": "t"}]
    assert result["summary"].startswith("First draft:"), "the text before the blocks, when the block has none"


@pytest.mark.parametrize(
    "block",
    ['{"summary": ', "[1, 2]", '{"other": 1}', '{"findings": "not a list"}', "NaN"],
)
def test_a_fenced_block_that_is_not_a_result_leaves_the_message_as_summary(block):
    message = f"Here:\n```json\n{block}\n```"
    assert result_from_message(message) == {"summary": message}


def test_the_agents_own_tokens_and_cost_are_kept():
    usage = agent_output.Usage(input_tokens=5, output_tokens=5, cost_usd=1.0)
    message = '```json\n{"summary": "s", "tokens": 3, "cost": 0.5}\n```'
    assert result_from_message(message, usage) == {"summary": "s", "tokens": 3, "cost": 0.5}


@pytest.mark.parametrize(
    "after",
    [
        # aider's commit message is one more model call after its answer: a limit it retried, then the commit.
        "litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached\n"
        "The API provider has rate limited you. Try again later or check your quotas.\n"
        "Retrying in 0.2 seconds...\nCommit 3f9c2e1 feat: greet the world\n",
        # a weak model the gateway does not serve: aider falls back to the main model and commits.
        "litellm.NotFoundError: OpenAIException - The model `gpt-4o-mini` does not exist\n"
        "Failed to generate commit message!\nCommit 3f9c2e1 (no commit message provided)\n",
    ],
)
def test_aider_going_on_after_an_api_error_is_not_a_give_up(after):
    found = parse("aider-text", fixture("aider.text.log") + after)
    assert not found.is_error and found.usage.tokens > 0


def test_aider_giving_up_after_its_answer_is_an_error():
    after = "litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached\n"
    assert parse("aider-text", fixture("aider.text.log") + after).is_error
