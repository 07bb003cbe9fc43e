"""Pure: read what a coding-agent CLI printed in its JSON output mode.

An agent's log holds its stdout and stderr interleaved, so every reader here skips what
is not its JSON (warnings, progress lines, a half line) instead of failing on it.

- ``claude-json``: Claude Code's ``--output-format json``: one JSON object
  ``{"type": "result", "result": <final message>, "usage": {...}, "total_cost_usd": ...,
  "num_turns": ..., "modelUsage": {<model>: {...}}, "is_error": ...}``.
- ``codex-jsonl``: ``codex exec --json``: one event per line; the final message is the
  last ``item.completed`` whose item is an ``agent_message``; usage is in ``turn.completed``.
- ``gemini-json``: Gemini CLI's ``--output-format json``: one JSON object, pretty-printed,
  ``{"session_id": ..., "response": <final message>, "stats": {"models": {<model>: {"tokens":
  {"prompt", "cached", "input", "candidates", "thoughts", "tool", "total"}}}}}`` (or ``"error"``
  instead of ``"response"``); one entry per model, as its model router asks a second model.
- ``aider-text``: aider prints no JSON; after each message to the model it prints
  ``Tokens: 2.5k sent, 45 received. Cost: $0.0066 message, $0.01 session.`` (see
  ``parse_aider``).

``result_from_message`` turns a final message into a run result: its last fenced ```json
block when that is a result (an object with ``summary``, ``verdict`` or ``findings``),
else ``{"summary": <the message, bounded>}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

FORMATS = ("claude-json", "codex-jsonl", "gemini-json", "aider-text")
SUMMARY_MAX_CHARS = 4000
RESULT_KEYS = ("summary", "verdict", "findings")
_FENCE = re.compile(r"```[ \t]*json[ \t]*\r?\n(.*?)\r?\n[ \t]*```", re.DOTALL | re.IGNORECASE)


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = None
    models: list[str] = field(default_factory=list)
    turns: int | None = None
    # {model: {input_tokens, output_tokens, cache_read_tokens, cache_write_tokens}} when the CLI
    # reports the tokens of each model apart (Gemini CLI), so each can be priced at its own rate.
    per_model: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class AgentOutput:
    final_message: str | None = None
    is_error: bool = False
    usage: Usage | None = None
    session_id: str = ""


def json_objects(text: str):
    """Every JSON object that stands on a line of its own, in order; other lines are skipped."""
    decoder = json.JSONDecoder()
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value, end = decoder.raw_decode(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


def _int(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _float(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def parse_claude(text: str) -> AgentOutput | None:
    found = None
    for obj in json_objects(text):
        if obj.get("type") == "result":
            found = obj
    if found is None:
        return None
    usage = found.get("usage") if isinstance(found.get("usage"), dict) else {}
    models = found.get("modelUsage") if isinstance(found.get("modelUsage"), dict) else {}
    message = found.get("result")
    return AgentOutput(
        final_message=message if isinstance(message, str) else None,
        is_error=bool(found.get("is_error")) or found.get("subtype") not in (None, "success"),
        usage=Usage(
            input_tokens=_int(usage.get("input_tokens")),
            output_tokens=_int(usage.get("output_tokens")),
            cache_read_tokens=_int(usage.get("cache_read_input_tokens")),
            cache_write_tokens=_int(usage.get("cache_creation_input_tokens")),
            cost_usd=_float(found.get("total_cost_usd")),
            models=[str(m) for m in models],
            turns=_int(found.get("num_turns")) if "num_turns" in found else None,
        ),
        session_id=str(found.get("session_id") or ""),
    )


def parse_codex(text: str) -> AgentOutput | None:
    message = None
    usage = Usage(turns=0)
    seen = failed = False
    session = ""
    for obj in json_objects(text):
        kind = obj.get("type")
        if kind == "thread.started":
            seen, session = True, str(obj.get("thread_id") or "")
        elif kind == "item.completed" and isinstance(obj.get("item"), dict):
            seen = True
            item = obj["item"]
            if item.get("type") == "agent_message" and isinstance(item.get("text"), str):
                message = item["text"]
        elif kind == "turn.completed":
            seen = True
            usage.turns += 1
            u = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
            cached = _int(u.get("cached_input_tokens"))
            # Codex counts cached tokens inside input_tokens; keep them apart, as Claude does.
            usage.input_tokens += max(0, _int(u.get("input_tokens")) - cached)
            usage.cache_read_tokens += cached
            usage.cache_write_tokens += _int(u.get("cache_write_input_tokens"))
            usage.output_tokens += _int(u.get("output_tokens"))
        elif kind in ("turn.failed", "error"):
            seen = failed = True
    if not seen:
        return None
    return AgentOutput(final_message=message, is_error=failed, usage=usage, session_id=session)


def parse_gemini(text: str) -> AgentOutput | None:
    found = None
    decoder = json.JSONDecoder()
    # Gemini prints one object, pretty-printed over many lines: try each line that opens one.
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip() != "{" and not line.lstrip().startswith('{"'):
            continue
        try:
            value, _ = decoder.raw_decode("".join(lines[i:]).lstrip())
        except ValueError:
            continue
        if isinstance(value, dict) and ("response" in value or "error" in value):
            found = value
    if found is None:
        return None
    usage = Usage()
    stats = found.get("stats") if isinstance(found.get("stats"), dict) else {}
    models = stats.get("models") if isinstance(stats.get("models"), dict) else {}
    for name, m in models.items():
        tokens = m.get("tokens") if isinstance(m, dict) and isinstance(m.get("tokens"), dict) else {}
        # Gemini CLI 0.61.0 counts the API's usageMetadata: `prompt` includes the `cached` tokens;
        # `thoughts` (thinking, billed as output) are apart from the `candidates`, and `tool`
        # (tool-use prompt, billed as input) apart from the prompt.
        cached = _int(tokens.get("cached"))
        split = {
            "input_tokens": max(0, _int(tokens.get("prompt")) - cached) + _int(tokens.get("tool")),
            "output_tokens": _int(tokens.get("candidates")) + _int(tokens.get("thoughts")),
            "cache_read_tokens": cached,
            "cache_write_tokens": 0,
        }
        usage.input_tokens += split["input_tokens"]
        usage.output_tokens += split["output_tokens"]
        usage.cache_read_tokens += cached
        usage.models.append(str(name))
        usage.per_model[str(name)] = split
    message = found.get("response")
    return AgentOutput(
        final_message=message if isinstance(message, str) else None,
        is_error=bool(found.get("error")),
        usage=usage,
        session_id=str(found.get("session_id") or ""),
    )


_AIDER_NUMBER = r"(\d+(?:\.\d+)?k?)"
_AIDER_TOKENS = re.compile(
    rf"^Tokens: {_AIDER_NUMBER} sent(?:, {_AIDER_NUMBER} cache write)?(?:, {_AIDER_NUMBER} cache hit)?, "
    rf"{_AIDER_NUMBER} received\.(?:\s*Cost: \$(\d+(?:\.\d+)?) message, \$(\d+(?:\.\d+)?) session\.)?[ \t]*$",
    re.MULTILINE,
)
_AIDER_COST = re.compile(r"^Cost: \$(\d+(?:\.\d+)?) message, \$(\d+(?:\.\d+)?) session\.[ \t]*$")
_AIDER_HEADER = re.compile(
    r"^(?:Aider v\S+|(?:Main |Weak |Editor )?[Mm]odel: .*|Git repo: .*|Repo-map: .*|Added .+ to the chat\.|"
    r"Cur working dir: .*|Git working dir: .*)$"
)
_AIDER_MODEL = re.compile(r"^(?:Main model|Model): (\S+)")
# An API error aider reports and then gives up on, still exiting 0 (litellm's exception name first).
_AIDER_API_ERROR = re.compile(r"^(?:litellm\.\w+Error\b|The API provider has rate limited you)")
# What aider prints when it goes on after such an error: a retry, or a commit made all the same.
_AIDER_WENT_ON = re.compile(r"^(?:Retrying in \d|Commit [0-9a-f]{7,}\b|Failed to generate commit message)")


def aider_tokens(value: str) -> int:
    """aider's count as printed: 950, 2.5k (one decimal under 10k), 12k (rounded to the thousand)."""
    if value.endswith("k"):
        return round(float(value[:-1]) * 1000)
    return int(float(value))


def parse_aider(text: str) -> AgentOutput | None:
    """What aider printed: its token and cost reports, and its last answer.

    After each message to the model aider prints ``Tokens: N sent[, N cache write][, N cache hit],
    N received.`` and, when it knows the model's prices, ``Cost: $X message, $Y session.`` (on the
    same line, or the next when both cache figures are there). The tokens are summed over the
    reports; aider rounds them (``2.5k`` under 10,000, ``12k`` above: up to 50, then 500 tokens
    off each), so the sums are approximate. "sent" includes the cache hits and writes, which are
    kept apart here. The cost is the session's, from the last Cost report; none when aider printed
    none (an unknown model). The model is the one aider's start-up lines name.

    The final message is what aider printed between its start-up lines (or the previous report)
    and the last report: with ``--no-pretty`` the answer is plain text. After a reflection (aider
    sent back an edit error or lint output and asked again) that text starts with aider's own
    notes, which nothing tells apart from the answer; so are other lines it prints before the
    answer (in a git repository, the name of a file the prompt mentions, as it adds the file to
    the chat). A fenced result at the end is still read.
    None when no report was printed (aider failed before any answer). `is_error` when an API error
    (litellm's, or its "rate limited you") follows the last report and nothing after it says aider
    went on (a "Retrying in", a commit): aider gave up, though it exits 0.
    """
    lines = text.splitlines()
    reports = [i for i, line in enumerate(lines) if _AIDER_TOKENS.match(line)]
    # aider exits 0 even when it gave up on the API (a rate limit it retried until its own limit):
    # an API error after its last report (or with none) is the attempt's end, reported as an error.
    after = reports[-1] + 1 if reports else 0
    errors = [i for i in range(after, len(lines)) if _AIDER_API_ERROR.match(lines[i])]
    gave_up = bool(errors) and not any(_AIDER_WENT_ON.match(line) for line in lines[errors[-1] + 1 :])
    if not reports:
        return AgentOutput(is_error=True) if gave_up else None
    usage = Usage(turns=len(reports))
    for i in reports:
        found = _AIDER_TOKENS.match(lines[i])
        sent, write, hit, received, _, session = found.groups()
        cost = found.group(6)
        if cost is None and i + 1 < len(lines) and (more := _AIDER_COST.match(lines[i + 1])):
            session = more.group(2)
        cache_write = aider_tokens(write) if write else 0
        cache_read = aider_tokens(hit) if hit else 0
        usage.input_tokens += max(0, aider_tokens(sent) - cache_write - cache_read)
        usage.cache_write_tokens += cache_write
        usage.cache_read_tokens += cache_read
        usage.output_tokens += aider_tokens(received)
        if session is not None:
            usage.cost_usd = float(session)
    start = 0
    for i, line in enumerate(lines[: reports[0]]):
        if line.startswith("Aider v"):
            start = i
            while start < reports[0] and (_AIDER_HEADER.match(lines[start]) or not lines[start].strip()):
                if model := _AIDER_MODEL.match(lines[start]):
                    usage.models = [model.group(1)]
                start += 1
    if len(reports) > 1:
        start = reports[-2] + 1
        if start < len(lines) and _AIDER_COST.match(lines[start]):
            start += 1
    message = "\n".join(lines[start : reports[-1]]).strip()
    return AgentOutput(final_message=message or None, usage=usage, is_error=gave_up)


# CLIs that exit 0 even when they gave up (aider after an API error it retried to its own limit):
# for these the output's `is_error` decides. The others' exit code already does (and their
# `is_error` may mark a passing trouble, like Codex's "Reconnecting..." events).
EXIT_ZERO_ON_ERROR = frozenset({"aider-text"})

PARSERS = {
    "claude-json": parse_claude,
    "codex-jsonl": parse_codex,
    "gemini-json": parse_gemini,
    "aider-text": parse_aider,
}


def parse(output_format: str, text: str) -> AgentOutput | None:
    """What the agent said in its JSON output mode; None when the format is unknown or absent."""
    parser = PARSERS.get(output_format)
    return parser(text) if parser else None


def is_result(value) -> bool:
    return (
        isinstance(value, dict)
        and any(k in value for k in RESULT_KEYS)
        and ("findings" not in value or isinstance(value["findings"], list))
    )


def fenced_result(message: str) -> dict | None:
    """The last fenced ```json block of a message that is a result, if any."""
    for block in reversed(_FENCE.findall(message)):
        try:
            value = json.loads(block)
        except (ValueError, RecursionError):
            continue
        if is_result(value):
            return value
    return None


def bounded(text: str, limit: int = SUMMARY_MAX_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def result_from_message(message: str, usage: Usage | None = None) -> dict:
    """A run result from an agent's final message (see the module's docstring).

    The usage the CLI reported becomes the documented ``tokens`` and ``cost`` fields, unless
    the agent's own result has them.
    """
    result = fenced_result(message)
    if result is None:
        result = {"summary": bounded(message)}
    elif "summary" not in result:
        before = _FENCE.split(message)[0]
        if before.strip():
            result = {"summary": bounded(before), **result}
    if usage is not None:
        if "tokens" not in result and usage.tokens:
            result["tokens"] = usage.tokens
        if "cost" not in result and usage.cost_usd is not None:
            result["cost"] = usage.cost_usd
    return result
