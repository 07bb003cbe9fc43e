"""Pure: what an attempt's tokens cost, and usage records added up.

A usage record is the dict stored in ``RunAttempt.usage`` and ``AgentRun.usage``::

    {"input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
     "cost_usd": float | None,   # None: unknown, and "cost_note" says why
     "models": [...], "turns": int | None,
     "source": "cli" | "api" | "result-file", "cost_note": str}

``tokens_total`` is added when only a total is known (a result file's ``tokens``); ``per_model``
(``{model: {<the four token fields>}}``) when the source splits the tokens by model (Gemini CLI,
whose model router asks a second model), so each model is priced at its own rate.
Prices are USD per million tokens. A model without a price gives ``cost_usd: None`` and a
note naming it: never a made-up number.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
SOURCES = ("cli", "api", "result-file")
MAX_MODELS = 20
MAX_MODEL_CHARS = 200
MAX_TOKENS = 10**15


@dataclass(frozen=True)
class Price:
    """One row of the price table. `model` is a name or an fnmatch pattern (``gpt-5*``)."""

    model: str
    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None
    entered_on: str = ""


def find_price(model: str, prices: Sequence[Price]) -> Price | None:
    """The price of a model: its exact name first (any case), else the longest pattern that matches."""
    name = model.strip().lower()
    for price in prices:
        if price.model.strip().lower() == name:
            return price
    matching = [p for p in prices if fnmatch.fnmatchcase(name, p.model.strip().lower())]
    return max(matching, key=lambda p: len(p.model)) if matching else None


def cost_of(usage: Mapping, prices: Sequence[Price]) -> tuple[float | None, str]:
    """(cost in USD, note): from the price table, for usage of one model; (None, why) otherwise."""
    models = list(usage.get("models") or [])
    if not tokens_of(usage):
        return 0.0, ""
    if not models:
        return None, "the agent did not say which model it used"
    if len({m.lower() for m in models}) > 1:
        split = usage.get("per_model") or {}
        if all(m in split for m in models):
            return _cost_per_model(split, models, prices)
        found = [find_price(m, prices) for m in models]
        if any(p is None for p in found) or len({(p.input, p.output, p.cache_read, p.cache_write) for p in found}) > 1:
            return None, f"tokens of several models ({', '.join(models)}) are not split per model"
    price = find_price(models[0], prices)
    if price is None:
        return None, f"no price for model '{models[0]}' in the price table"
    total = _int(usage.get("input_tokens")) * price.input + _int(usage.get("output_tokens")) * price.output
    for field, rate, label in (
        ("cache_read_tokens", price.cache_read, "cache read"),
        ("cache_write_tokens", price.cache_write, "cache write"),
    ):
        if _int(usage.get(field)):
            if rate is None:
                return None, f"no {label} price for model '{models[0]}' in the price table"
            total += _int(usage.get(field)) * rate
    when = f" (entered {price.entered_on})" if price.entered_on else ""
    return total / 1_000_000, f"from the price table: {price.model}{when}"


def _cost_per_model(split: Mapping, models: Sequence[str], prices: Sequence[Price]) -> tuple[float | None, str]:
    total, notes = 0.0, []
    for model in models:
        cost, note = cost_of(record(**split[model], models=[model]), prices)
        if cost is None:
            return None, note
        total += cost
        if note:
            notes.append(note.removeprefix("from the price table: "))
    return total, "from the price table: " + ", ".join(notes)


def tokens_of(usage: Mapping | None) -> int:
    if not usage:
        return 0
    return sum(_int(usage.get(f)) for f in TOKEN_FIELDS) or _int(usage.get("tokens_total"))


def record(
    *,
    input_tokens=0,
    output_tokens=0,
    cache_read_tokens=0,
    cache_write_tokens=0,
    cost_usd=None,
    models: Iterable = (),
    turns=None,
    source: str = "cli",
    cost_note: str = "",
    per_model: Mapping | None = None,
) -> dict:
    """A usage record with every field in its place and in bounds."""
    cost = _cost(cost_usd)
    out = {
        "input_tokens": _int(input_tokens),
        "output_tokens": _int(output_tokens),
        "cache_read_tokens": _int(cache_read_tokens),
        "cache_write_tokens": _int(cache_write_tokens),
        "cost_usd": cost,
        "models": _models(models),
        "turns": _int(turns) if turns is not None else None,
        "source": source if source in SOURCES else "cli",
        "cost_note": "" if cost is not None else str(cost_note)[:300],
    }
    split = _per_model(per_model, out["models"])
    if split:
        out["per_model"] = split
    return out


def _per_model(value, models: list[str]) -> dict:
    """Each named model's tokens (models the record does not name are dropped)."""
    if not isinstance(value, Mapping):
        return {}
    return {m: {f: _int(value[m].get(f)) for f in TOKEN_FIELDS} for m in models if isinstance(value.get(m), Mapping)}


def from_mapping(value, *, source: str) -> dict | None:
    """A usage record from a file's JSON (the model runner's usage file); None if it is not one."""
    if not isinstance(value, Mapping):
        return None
    fields = {k: value.get(k) for k in (*TOKEN_FIELDS, "cost_usd", "turns", "cost_note")}
    return record(**{k: v for k, v in fields.items() if v is not None}, models=value.get("models") or (), source=source)


def from_result(result) -> dict | None:
    """The documented ``tokens`` / ``cost`` of a result file, as a usage record; None if it has neither.

    ``tokens`` is a total (a whole number), or a mapping with ``input`` / ``output`` / ``cache_read`` /
    ``cache_write``; ``cost`` is USD; ``model`` (optional) names the model."""
    if not isinstance(result, Mapping) or ("tokens" not in result and "cost" not in result):
        return None
    tokens = result.get("tokens")
    usage = record(
        cost_usd=result.get("cost"),
        models=[result["model"]] if isinstance(result.get("model"), str) else (),
        source="result-file",
        cost_note="the result file gave tokens but no cost",
    )
    if isinstance(tokens, Mapping):
        for short in ("input", "output", "cache_read", "cache_write"):
            usage[f"{short}_tokens"] = _int(tokens.get(short, tokens.get(f"{short}_tokens")))
    elif _int(tokens):
        usage["tokens_total"] = _int(tokens)
    if usage["cost_usd"] is None and not tokens_of(usage):
        return None
    return usage


def priced(usage: dict, prices: Sequence[Price], *, fallback_cost=None) -> dict:
    """The record with its cost filled from the price table (or `fallback_cost`) when it has none."""
    if usage.get("cost_usd") is not None:
        usage["cost_note"] = ""
        return usage
    if usage.get("tokens_total") and not sum(_int(usage.get(f)) for f in TOKEN_FIELDS):
        cost, note = None, "only a total of tokens is known, not how many were input or output"
    else:
        cost, note = cost_of(usage, prices)
    if cost is None and _cost(fallback_cost) is not None:
        cost, note = _cost(fallback_cost), "from the result file's cost"
    usage["cost_usd"] = cost
    usage["cost_note"] = note if cost is None else ""
    if cost is not None and note:
        usage["cost_from"] = note  # how a cost the agent did not state was found
    return usage


def add(records: Iterable[Mapping | None]) -> dict | None:
    """The sum of an attempt's usage records (a run's usage); None when none has any.

    The cost is known only when every record's cost is; otherwise None, with the first reason."""
    records = [r for r in records if r]
    if not records:
        return None
    total = record(source=records[-1].get("source", "cli"))
    total["cost_usd"] = 0.0
    notes = []
    turns = None
    for r in records:
        for f in TOKEN_FIELDS:
            total[f] += _int(r.get(f))
        if _int(r.get("tokens_total")):
            total["tokens_total"] = total.get("tokens_total", 0) + _int(r.get("tokens_total"))
        for m in r.get("models") or []:
            if m not in total["models"] and len(total["models"]) < MAX_MODELS:
                total["models"].append(m)
        if r.get("turns") is not None:
            turns = (turns or 0) + _int(r.get("turns"))
        cost = _cost(r.get("cost_usd"))
        if cost is None:
            notes.append(r.get("cost_note") or "unknown")
        elif total["cost_usd"] is not None:
            total["cost_usd"] += cost
    total["turns"] = turns
    if notes:
        total["cost_usd"] = None
        total["cost_note"] = notes[0]
    return total


def model_from_argv(argv: Sequence[str]) -> str:
    """The model an agent type's command asks for (``--model X``, ``-m X``, ``--model=X``, ``-c model=X``)."""
    args = [str(a) for a in argv]
    for i, arg in enumerate(args):
        nxt = args[i + 1] if i + 1 < len(args) else ""
        if arg in ("--model", "-m") and nxt and not nxt.startswith("-") and "{" not in nxt:
            return nxt
        if arg.startswith("--model="):
            return arg.split("=", 1)[1]
        if arg in ("-c", "--config") and nxt.replace(" ", "").startswith("model="):
            return nxt.split("=", 1)[1].strip().strip("\"'")
    return ""


def _int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value < 0:
        return 0
    return int(min(value, MAX_TOKENS))


def _cost(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    if value < 0 or value > 1e9:
        return None
    return float(value)


def _models(models) -> list[str]:
    if isinstance(models, str):
        models = [models]
    out: list[str] = []
    for m in models if isinstance(models, Iterable) else ():
        if isinstance(m, str) and m.strip() and m not in out:
            out.append(m.strip()[:MAX_MODEL_CHARS])
        if len(out) >= MAX_MODELS:
            break
    return out
