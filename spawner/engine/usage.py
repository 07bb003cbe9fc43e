"""Record what an attempt used (tokens, cost) when it ends: the one place usage is written.

Read, first found first: the model runner's usage file (``<key>.<n>.usage.json`` beside the
attempt's log; source "api"), the coding CLI's JSON output in the log (the agent type's
``output_format``; source "cli"), the result file's ``tokens`` / ``cost`` (source "result-file").
A cost the source does not state comes from the price table (``ModelPrice``), else from the
result file's ``cost``, else it stays unknown (``cost_usd: None``) with the reason in ``cost_note``.

The attempt's record is written once (fenced: the attempt is still running and has none); the
run's is the sum over its attempts, recomputed under the run's row lock. No status is written here.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.db import transaction

from spawner.core import pricing
from spawner.engine import final_message, redaction
from spawner.models import AgentRun, ModelPrice, RunAttempt
from spawner.states import AttemptStatus

USAGE_FILE_MAX_BYTES = 100_000


def usage_path(log_path: Path, key: str, number: int) -> Path:
    """The model runner's usage file of an attempt, beside its log."""
    return log_path.with_name(f"{key}.{number}.usage.json")


def price_table() -> list[pricing.Price]:
    return [
        pricing.Price(
            model=p.model,
            input=p.input_per_mtok,
            output=p.output_per_mtok,
            cache_read=p.cache_read_per_mtok,
            cache_write=p.cache_write_per_mtok,
            entered_on=p.entered_on.isoformat() if p.entered_on else "",
        )
        for p in ModelPrice.objects.all()
    ]


def _read_usage_file(path: Path) -> dict | None:
    try:
        if path.stat().st_size > USAGE_FILE_MAX_BYTES:
            return None
        return pricing.from_mapping(json.loads(path.read_text("utf-8")), source="api")
    except (OSError, ValueError, RecursionError):
        return None


def _read_cli(output_format: str, log_path: Path) -> dict | None:
    output = final_message.parsed_log(output_format, log_path)
    if output is None or output.usage is None:
        return None
    u = output.usage
    if not u.tokens and u.cost_usd is None:
        return None
    return pricing.record(**u.as_dict(), source="cli")


def attempt_usage(attempt: RunAttempt, *, log_path: Path, result=None, prices=None) -> dict | None:
    """What the attempt used, from whichever source has it; None when no source says anything."""
    run = attempt.run
    from_result = pricing.from_result(result)
    usage = _read_usage_file(usage_path(log_path, run.key, attempt.number)) or _read_cli(
        run.agent_type.output_format, log_path
    )
    if usage is None:
        usage = from_result
        if usage is None:
            return None
    if not usage["models"]:
        # Codex's events do not name the model: the agent type's command may (`-m`, `--model`).
        model = pricing.model_from_argv(run.agent_type.argv or [])
        if model:
            usage["models"] = [model]
    fallback = from_result.get("cost_usd") if from_result and usage is not from_result else None
    if usage.get("cost_usd") is None:
        usage = pricing.priced(usage, price_table() if prices is None else prices, fallback_cost=fallback)
    return usage


def record_attempt_end(
    attempt: RunAttempt, *, log_path: Path, result=None, secrets=(), stopped: bool = False
) -> dict | None:
    """Store the attempt's usage and add it into its run's. Called by ``execution.attempt_finish``
    before the attempt's end is recorded, so the end's event shows the figures (and the batch's
    budget, checked when it advances, counts them); with ``stopped``, by the worker that stopped
    an attempt cancelled or reaped under it (what it used before is spent too)."""
    usage = attempt_usage(attempt, log_path=log_path, result=result)
    if usage is None:
        return None
    usage = redaction.mask_json(usage, list(secrets)) if secrets else usage
    with transaction.atomic():
        AgentRun.objects.select_for_update(no_key=True).filter(id=attempt.run_id).first()
        statuses = [AttemptStatus.CANCELLED, AttemptStatus.LOST] if stopped else [AttemptStatus.RUNNING]
        stored = RunAttempt.objects.filter(id=attempt.id, status__in=statuses, usage__isnull=True).update(usage=usage)
        if not stored:
            return None
        run_recompute(attempt.run_id)
    return usage


def run_recompute(run_id: int) -> None:
    """The run's usage and cost: the sum over its attempts (the caller holds the run's row lock)."""
    records = list(RunAttempt.objects.filter(run_id=run_id).order_by("number").values_list("usage", flat=True))
    total = pricing.add(records)
    AgentRun.objects.filter(id=run_id).update(usage=total, cost_usd=total["cost_usd"] if total else None)
