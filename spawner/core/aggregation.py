"""Pure fan-in: combine the runs' results of a batch by a named strategy.

Input is plain data (one `RunResult` per run); output is a JSON-ready dict that
the browser, the CLI (`--json`) and the Python API all show as it is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from spawner.core.words import plural
from spawner.states import Strategy

STRATEGIES = tuple(Strategy.values)
SEVERITIES = ("critical", "high", "medium", "low", "info")
_SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
# What a failed run of each priority means for the batch (issue: failure severity).
FAILURE_LEVEL = {0: "escalation", 1: "warning", 2: "note"}


@dataclass(frozen=True)
class RunResult:
    key: str
    status: str
    priority: int = 1
    order: int = 0
    finished: float | None = None  # seconds, for "first"
    result: Any = None
    result_error: str = ""
    output_tail: str = ""
    error: str = ""
    usage: Any = None  # the run's recorded usage (spawner.core.pricing): tokens and cost, or None
    cost_usd: float | None = None


TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def _cost_words(agent: dict) -> str:
    """ ", 12345 tokens, $0.0420" (or "cost unknown: why") for the Markdown export."""
    words = ""
    if isinstance(agent.get("tokens"), int) and not isinstance(agent.get("tokens"), bool):
        words += f", {agent['tokens']} tokens"
    cost = agent.get("cost")
    if isinstance(cost, int | float) and not isinstance(cost, bool):
        words += f", ${cost:.4f}"
    elif agent.get("cost_note"):
        words += f", cost unknown: {agent['cost_note']}"
    return words


@dataclass
class Finding:
    severity: str
    title: str
    file: str = ""
    line: int | None = None
    detail: str = ""
    agents: list[str] = field(default_factory=list)

    def identity(self) -> tuple[str, int | None, str]:
        return (self.file.strip().lstrip("./"), self.line, " ".join(self.title.lower().split()))


def _severity(value: Any) -> str:
    value = str(value or "").lower()
    return value if value in _SEVERITY_RANK else "info"


def _line(value: Any) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def findings_of(run: RunResult) -> list[Finding]:
    """The findings a run reported, cleaned; anything malformed is skipped, not fatal."""
    raw = run.result.get("findings") if isinstance(run.result, dict) else None
    if not isinstance(raw, list):
        return []
    found = []
    for item in raw:
        if not isinstance(item, dict) or not item.get("title"):
            continue
        found.append(
            Finding(
                severity=_severity(item.get("severity")),
                title=str(item["title"])[:500],
                file=str(item.get("file") or ""),
                line=_line(item.get("line")),
                detail=str(item.get("detail") or "")[:5000],
                agents=[run.key],
            )
        )
    return found


def merge_findings(runs: Sequence[RunResult]) -> list[Finding]:
    """Union of findings; the same file, line and title fold into one, crediting every agent."""
    merged: dict[tuple, Finding] = {}
    for run in runs:
        for finding in findings_of(run):
            key = finding.identity()
            if key not in merged:
                merged[key] = finding
                continue
            kept = merged[key]
            if run.key not in kept.agents:
                kept.agents.append(run.key)
            if _SEVERITY_RANK[finding.severity] < _SEVERITY_RANK[kept.severity]:
                kept.severity = finding.severity
            if len(finding.detail) > len(kept.detail):
                kept.detail = finding.detail
    return sorted(merged.values(), key=lambda f: (_SEVERITY_RANK[f.severity], f.file, f.line or 0, f.title))


def _summary_of(run: RunResult) -> str:
    if isinstance(run.result, dict) and run.result.get("summary"):
        return str(run.result["summary"])
    lines = [line for line in run.output_tail.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _verdict_of(run: RunResult) -> str | None:
    if isinstance(run.result, dict) and run.result.get("verdict"):
        return str(run.result["verdict"]).strip().lower()
    return None


def _agent_entry(run: RunResult) -> dict[str, Any]:
    return {
        "key": run.key,
        "status": run.status,
        "priority": f"P{run.priority}",
        "summary": _summary_of(run),
        "verdict": _verdict_of(run),
        "result": run.result,
        "result_error": run.result_error,
        "suggestions": (run.result.get("suggestions") or []) if isinstance(run.result, dict) else [],
        **_usage_of(run),
    }


def _usage_of(run: RunResult) -> dict[str, Any]:
    """Tokens and cost: what was recorded for the run, else what its result says."""
    usage = run.usage if isinstance(run.usage, dict) else None
    if usage:
        tokens = sum(int(usage.get(f) or 0) for f in TOKEN_FIELDS) or usage.get("tokens_total")
        return {"tokens": tokens or None, "cost": run.cost_usd, "cost_note": usage.get("cost_note") or ""}
    result = run.result if isinstance(run.result, dict) else {}
    return {"tokens": result.get("tokens"), "cost": result.get("cost"), "cost_note": ""}


def failure_notes(runs: Sequence[RunResult]) -> list[dict[str, str]]:
    """Each run that did not succeed, as an escalation (P0), a warning (P1) or a note (P2)."""
    notes = []
    for run in runs:
        if run.status == "succeeded":
            continue
        level = FAILURE_LEVEL.get(run.priority, "note")
        if run.status in ("cancelled", "skipped") and level == "escalation":
            level = "warning"  # a decision or a consequence, not a failure of its own
        notes.append(
            {
                "level": level,
                "run": run.key,
                "status": run.status,
                "message": f"P{run.priority} run '{run.key}' ended {run.status}"
                + (f": {run.error}" if run.error else ""),
            }
        )
    return notes


@dataclass
class Combined:
    """A batch's combined result. Stored and shown as `as_data()`: the one place it is serialised."""

    strategy: str
    used: list[str]  # runs whose results went in
    unused: dict[str, str]  # run -> why its result could not be used (the gaps)
    notes: list[dict[str, str]]
    agents: list[dict[str, Any]]
    status: str = ""  # complete, partial, escalated, empty
    summary: str = ""
    verdict: str | None = None
    escalate: str | None = None  # why a person must decide (a vote tie, no quorum)
    findings: list[Finding] = field(default_factory=list)
    votes: dict[str, int] | None = None  # vote
    quorum: int | None = None  # vote
    winner: str | None = None  # priority, first_success
    supporting: list[str] | None = None  # priority

    def as_data(self) -> dict[str, Any]:
        data = {
            "strategy": self.strategy,
            "status": self.status,
            "summary": self.summary,
            "verdict": self.verdict,
            "escalate": self.escalate,
            "used": self.used,
            "unused": self.unused,
            "notes": self.notes,
            "findings": [f.__dict__ for f in self.findings],
            "agents": self.agents,
        }
        extras = {"votes": self.votes, "quorum": self.quorum, "winner": self.winner, "supporting": self.supporting}
        return data | {k: v for k, v in extras.items() if v is not None}


def aggregate(strategy: str, runs: Sequence[RunResult]) -> Combined:
    """Combine a batch's runs. Never raises on bad results: they become gaps."""
    succeeded = [r for r in runs if r.status == "succeeded"]
    used = [r for r in succeeded if not r.result_error]
    unused = {r.key: f"run {r.status}" for r in runs if r.status != "succeeded"}
    unused.update({r.key: f"result error: {r.result_error}" for r in succeeded if r.result_error})
    out = Combined(
        strategy=strategy,
        used=[r.key for r in used],
        unused=unused,
        notes=failure_notes(runs),
        agents=[_agent_entry(r) for r in runs],
    )
    _STRATEGY.get(strategy, _all)(out, used, runs)
    if not used:
        out.status = "empty"
        out.summary = out.summary or "no run produced a usable result"
    elif out.escalate:
        out.status = "escalated"
    elif out.unused:
        out.status = "partial"
    else:
        out.status = "complete"
    return out


def _merge(out: Combined, used: Sequence[RunResult], runs: Sequence[RunResult]) -> None:
    out.findings = merge_findings(used)
    by_severity = Counter(f.severity for f in out.findings)
    counts = ", ".join(f"{by_severity[s]} {s}" for s in SEVERITIES if by_severity[s])
    out.summary = f"{plural(len(out.findings), 'finding')} from {plural(len(used), 'agent')}"
    out.summary += f": {counts}" if counts else ""
    verdicts = [v for r in used if (v := _verdict_of(r))]
    out.verdict = _worst_verdict(verdicts)


def _worst_verdict(verdicts: Sequence[str]) -> str | None:
    order = ["fail", "request_changes", "warn", "pass", "approve"]
    known = [v for v in verdicts if v in order]
    return min(known, key=order.index) if known else (verdicts[0] if verdicts else None)


def _vote(out: Combined, used: Sequence[RunResult], runs: Sequence[RunResult]) -> None:
    votes = Counter(v for r in used if (v := _verdict_of(r)))
    quorum = len(runs) // 2 + 1
    out.votes = dict(votes)
    out.quorum = quorum
    if not votes:
        out.escalate = "no agent gave a verdict"
        out.summary = "no verdicts to vote on"
        return
    ranked = votes.most_common()
    top, count = ranked[0]
    if len(ranked) > 1 and ranked[1][1] == count:
        tied = sorted(v for v, n in ranked if n == count)
        out.escalate = out.summary = f"tie between {', '.join(tied)} ({plural(count, 'vote')} each)"
        return
    if count < quorum:
        out.escalate = out.summary = f"no quorum: '{top}' has {count} of {len(runs)} votes, {quorum} needed"
        return
    out.verdict = top
    out.summary = f"'{top}' by {count} of {len(runs)} agents"
    out.findings = merge_findings([r for r in used if _verdict_of(r) == top])


def _priority(out: Combined, used: Sequence[RunResult], runs: Sequence[RunResult]) -> None:
    if not used:
        return
    winner = min(used, key=lambda r: (r.priority, r.order))
    out.winner = winner.key
    out.supporting = [r.key for r in used if r is not winner]
    out.summary = f"P{winner.priority} '{winner.key}': {_summary_of(winner)}"
    out.verdict = _verdict_of(winner)
    out.findings = merge_findings([winner])


def _first_success(out: Combined, used: Sequence[RunResult], runs: Sequence[RunResult]) -> None:
    if not used:
        return
    winner = min(used, key=lambda r: (r.finished if r.finished is not None else float("inf"), r.order))
    out.winner = winner.key
    out.summary = f"'{winner.key}' finished first: {_summary_of(winner)}"
    out.verdict = _verdict_of(winner)
    out.findings = merge_findings([winner])
    # Losers cancelled by the race are not gaps.
    out.unused = {k: v for k, v in out.unused.items() if v != "run cancelled"}


def _all(out: Combined, used: Sequence[RunResult], runs: Sequence[RunResult]) -> None:
    out.summary = f"{plural(len(used), 'result')} side by side"
    out.findings = []


_STRATEGY = {
    Strategy.MERGE: _merge,
    Strategy.VOTE: _vote,
    Strategy.PRIORITY: _priority,
    Strategy.FIRST_SUCCESS: _first_success,
    Strategy.ALL: _all,
}


def to_markdown(agg: dict[str, Any], *, title: str) -> str:
    """The aggregation as a Markdown report."""
    lines = [f"# {title}", "", f"Strategy: **{agg['strategy']}** · status: **{agg['status']}**"]
    if agg.get("verdict"):
        lines.append(f"Verdict: **{agg['verdict']}**")
    lines += ["", agg.get("summary") or "", ""]
    if agg.get("escalate"):
        lines += [f"> Escalated: {agg['escalate']}", ""]
    if agg.get("findings"):
        lines += ["## Findings", "", "| severity | title | file | line | agents |", "|---|---|---|---|---|"]
        for f in agg["findings"]:
            cells = [
                f["severity"],
                f["title"],
                f["file"],
                "" if f["line"] is None else str(f["line"]),
                ", ".join(f["agents"]),
            ]
            lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
        lines.append("")
    lines += ["## Agents", ""]
    for a in agg.get("agents", []):
        lines.append(f"- **{a['key']}** ({a['priority']}, {a['status']}{_cost_words(a)}): {a['summary'] or '—'}")
    if agg.get("unused"):
        lines += ["", "## Gaps", ""]
        lines += [f"- {key}: {why}" for key, why in agg["unused"].items()]
    if agg.get("notes"):
        lines += ["", "## Failures", ""]
        lines += [f"- {n['level']}: {n['message']}" for n in agg["notes"]]
    return "\n".join(lines) + "\n"
