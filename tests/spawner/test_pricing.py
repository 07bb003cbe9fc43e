"""Pure cost computation: the price table, usage records added up, a model named in argv."""

from __future__ import annotations

import pytest

from spawner.core import pricing

PRICES = [
    pricing.Price("claude-sonnet-4*", 3.0, 15.0, 0.30, 3.75, "2026-11-26"),
    pricing.Price("gpt-5", 1.25, 10.0, 0.125, 0.0, "2026-11-26"),
    pricing.Price("gpt-5*", 9.0, 9.0, None, None),
    pricing.Price("gemini-2.5-pro", 1.25, 10.0, 0.31, None),
]


def test_exact_name_beats_a_pattern_and_the_longest_pattern_wins():
    assert pricing.find_price("GPT-5", PRICES).input == 1.25
    assert pricing.find_price("gpt-5-mini", PRICES).input == 9.0
    assert pricing.find_price("claude-sonnet-4-5-20250929", PRICES).output == 15.0
    assert pricing.find_price("llama-3", PRICES) is None


def test_cost_from_the_price_table_counts_each_kind_of_token():
    usage = pricing.record(input_tokens=1_000_000, output_tokens=100_000, cache_read_tokens=2_000_000, models=["gpt-5"])
    cost, note = pricing.cost_of(usage, PRICES)
    assert cost == pytest.approx(1.25 + 1.0 + 0.25)
    assert "gpt-5" in note and "2026-11-26" in note


def test_unknown_model_or_no_model_or_missing_cache_price_is_unknown_with_the_reason():
    assert pricing.cost_of(pricing.record(input_tokens=5, models=["llama-3"]), PRICES) == (
        None,
        "no price for model 'llama-3' in the price table",
    )
    assert pricing.cost_of(pricing.record(input_tokens=5), PRICES)[0] is None
    cost, note = pricing.cost_of(
        pricing.record(input_tokens=5, cache_write_tokens=5, models=["gemini-2.5-pro"]), PRICES
    )
    assert cost is None and "cache write" in note
    cost, note = pricing.cost_of(pricing.record(input_tokens=5, models=["gpt-5", "llama-3"]), PRICES)
    assert cost is None and "several models" in note


def test_tokens_split_per_model_price_each_model_at_its_rate():
    prices = [*PRICES, pricing.Price("gemini-*-flash-lite", 0.1, 0.4, 0.01, None, "2026-11-26")]
    split = {
        "gemini-2.5-pro": {"input_tokens": 1_000_000, "output_tokens": 100_000, "cache_read_tokens": 1_000_000},
        "gemini-2.5-flash-lite": {"input_tokens": 1_000_000, "cache_read_tokens": 1_000_000},
        "not-named": {"input_tokens": 5},
    }
    usage = pricing.record(
        input_tokens=2_000_000,
        output_tokens=100_000,
        cache_read_tokens=2_000_000,
        models=["gemini-2.5-flash-lite", "gemini-2.5-pro"],
        per_model=split,
    )
    assert set(usage["per_model"]) == {"gemini-2.5-flash-lite", "gemini-2.5-pro"}
    assert usage["per_model"]["gemini-2.5-flash-lite"]["output_tokens"] == 0
    cost, note = pricing.cost_of(usage, prices)
    assert cost == pytest.approx((0.1 + 0.01) + (1.25 + 1.0 + 0.31))
    assert note == "from the price table: gemini-*-flash-lite (entered 2026-11-26), gemini-2.5-pro"
    cost, note = pricing.cost_of(usage, PRICES)
    assert cost is None and note == "no price for model 'gemini-2.5-flash-lite' in the price table"
    unsplit = pricing.record(input_tokens=5, models=["gemini-2.5-pro", "gpt-5"], per_model={"gpt-5": {}})
    assert pricing.cost_of(unsplit, PRICES) == (
        None,
        "tokens of several models (gemini-2.5-pro, gpt-5) are not split per model",
    )
    assert "per_model" not in pricing.record(input_tokens=5, models=["m"], per_model="junk")


def test_priced_keeps_a_stated_cost_and_falls_back_to_the_result_files():
    stated = pricing.priced(pricing.record(input_tokens=5, cost_usd=0.5, models=["llama"]), PRICES)
    assert stated["cost_usd"] == 0.5 and stated["cost_note"] == ""
    fallback = pricing.priced(pricing.record(input_tokens=5, models=["llama"]), PRICES, fallback_cost=0.2)
    assert fallback["cost_usd"] == 0.2 and fallback["cost_from"] == "from the result file's cost"
    unknown = pricing.priced(pricing.record(input_tokens=5, models=["llama"]), PRICES)
    assert unknown["cost_usd"] is None and "llama" in unknown["cost_note"]


def test_result_file_tokens_and_cost():
    assert pricing.from_result({"summary": "x"}) is None
    usage = pricing.from_result({"summary": "x", "tokens": 1200, "cost": 0.4})
    assert usage["tokens_total"] == 1200 and usage["cost_usd"] == 0.4 and usage["source"] == "result-file"
    split = pricing.from_result({"tokens": {"input": 10, "output": 3}, "model": "gpt-5"})
    assert (split["input_tokens"], split["output_tokens"], split["models"]) == (10, 3, ["gpt-5"])
    only_total = pricing.priced(pricing.from_result({"tokens": 99}), PRICES)
    assert only_total["cost_usd"] is None and "only a total" in only_total["cost_note"]
    for bad in ({"cost": -1}, {"cost": "1"}, {"cost": float("nan")}, {"tokens": True}):
        assert pricing.from_result(bad) is None


def test_add_sums_attempts_and_an_unknown_cost_makes_the_total_unknown():
    a = pricing.record(input_tokens=10, output_tokens=5, cost_usd=0.1, models=["m"], turns=2)
    b = pricing.record(input_tokens=1, output_tokens=1, cost_usd=0.2, models=["m", "n"], turns=1)
    total = pricing.add([a, None, b])
    assert (total["input_tokens"], total["output_tokens"], total["turns"]) == (11, 6, 3)
    assert total["cost_usd"] == pytest.approx(0.3) and total["models"] == ["m", "n"]
    unknown = pricing.add([a, pricing.record(input_tokens=1, cost_note="no price for model 'x'")])
    assert unknown["cost_usd"] is None and unknown["cost_note"] == "no price for model 'x'"
    assert pricing.add([None, {}]) is None


def test_record_bounds_its_fields():
    r = pricing.record(input_tokens=-3, output_tokens=2.7, cost_usd=True, models=["a", "a", 3, "x" * 500], source="?")
    assert r["input_tokens"] == 0 and r["output_tokens"] == 2 and r["cost_usd"] is None
    assert r["models"] == ["a", "x" * 200] and r["source"] == "cli"


@pytest.mark.parametrize(
    ("argv", "model"),
    [
        (["codex", "exec", "-m", "gpt-5", "-"], "gpt-5"),
        (["codex", "exec", "--model=o3"], "o3"),
        (["codex", "exec", "-c", 'model="gpt-5-codex"'], "gpt-5-codex"),
        (["claude", "-p", "--model", "{prompt}"], ""),
        (["codex", "exec", "-"], ""),
    ],
)
def test_model_from_argv(argv, model):
    assert pricing.model_from_argv(argv) == model
