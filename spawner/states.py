"""The states of runs, attempts and batches, and which of them are final."""

from __future__ import annotations

from django.db import models


class RunStatus(models.TextChoices):
    PENDING = "pending"  # waiting for its dependencies or a free slot
    QUEUED = "queued"  # an attempt is enqueued (or backing off before a retry)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    LOST = "lost"  # its worker vanished and no retries were left
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # a dependency did not succeed


class AttemptStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    LOST = "lost"
    CANCELLED = "cancelled"
    # A stopping cluster gave it back unfinished: the run gets a fresh attempt that spends no retry.
    HANDED_BACK = "handed_back"
    # It hit a rate limit (HTTP 429, or a CLI's rate-limit message or exit code): the run waits the
    # advised delay and gets a fresh attempt that spends no retry (spawner.core.ratelimit bounds the waits).
    RATE_LIMITED = "rate_limited"


class BatchStatus(models.TextChoices):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"  # some runs succeeded, some did not
    FAILED = "failed"
    CANCELLED = "cancelled"


RUN_ACTIVE = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})
RUN_TERMINAL = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.TIMED_OUT,
        RunStatus.LOST,
        RunStatus.CANCELLED,
        RunStatus.SKIPPED,
    }
)
# Final states that count as a failure of the run itself (not a decision to stop it).
RUN_FAILED = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.LOST})
ATTEMPT_TERMINAL = frozenset(set(AttemptStatus) - {AttemptStatus.QUEUED, AttemptStatus.RUNNING})
# Attempt outcomes that another attempt may fix.
ATTEMPT_RETRYABLE = frozenset({AttemptStatus.FAILED, AttemptStatus.TIMED_OUT, AttemptStatus.LOST})
BATCH_TERMINAL = frozenset(set(BatchStatus) - {BatchStatus.RUNNING})


class Mode(models.TextChoices):
    PARALLEL = "parallel"
    SEQUENTIAL = "sequential"


class FailurePolicy(models.TextChoices):
    CONTINUE = "continue"  # let the other runs finish
    FAIL_FAST = "fail_fast"  # cancel the rest on the first failure


class Strategy(models.TextChoices):
    """How a batch's results are combined."""

    MERGE = "merge"
    VOTE = "vote"
    PRIORITY = "priority"
    FIRST_SUCCESS = "first_success"  # the race: the first success wins, the rest are cancelled
    ALL = "all"


class Priority(models.IntegerChoices):
    P0 = 0, "P0"
    P1 = 1, "P1"
    P2 = 2, "P2"


class AgentKind(models.TextChoices):
    """How an agent type runs: a local command, or a call to an OpenAI-compatible model endpoint."""

    COMMAND = "command", "command (a CLI agent or a tool, run as a process)"
    MODEL = "model", "model (an OpenAI-compatible chat-completions endpoint, called from the worker)"


class PromptVia(models.TextChoices):
    ARG = "arg", "argv element ({prompt} in the argv template)"
    STDIN = "stdin", "standard input"
    ENV = "env", "environment variable SPAWNER_PROMPT"
    FILE = "file", "file ({prompt_file} in argv, SPAWNER_PROMPT_FILE in env)"


class OutputFormat(models.TextChoices):
    """How to read a coding agent's output for its final message (spawner.core.agent_output)."""

    NONE = "", "plain text (no final message is read)"
    CLAUDE_JSON = "claude-json", "Claude Code --output-format json"
    CODEX_JSONL = "codex-jsonl", "codex exec --json"
    GEMINI_JSON = "gemini-json", "Gemini CLI --output-format json"
    AIDER_TEXT = "aider-text", "aider's printed Tokens / Cost lines (text)"


class EventKind(models.TextChoices):
    """Every kind of entry in the event log, one definition each."""

    BATCH_LAUNCHED = "batch.launched"
    BATCH_CANCEL_REQUESTED = "batch.cancel_requested"
    BATCH_REOPENED = "batch.reopened"
    BATCH_POLICY_CHANGED = "batch.policy_changed"
    BATCH_SUCCEEDED = "batch.succeeded"
    BATCH_PARTIAL = "batch.partial"
    BATCH_FAILED = "batch.failed"
    BATCH_CANCELLED = "batch.cancelled"
    RUN_PENDING = "run.pending"  # reopened: a dependency is retried
    RUN_QUEUED = "run.queued"
    RUN_RETRYING = "run.retrying"  # an automatic retry after a backoff
    RUN_RETRIED = "run.retried"  # a person asked for another attempt
    RUN_HANDED_BACK = "run.handed_back"  # a stopping cluster gave it back: a fresh attempt, no retry spent
    RUN_RATE_LIMITED = "run.rate_limited"  # a rate limit: a fresh attempt after the advised delay, no retry spent
    RUN_RUNNING = "run.running"
    RUN_OUTPUT = "run.output"
    RUN_CHANGES = "run.changes"  # its worktree's changes were committed and summarised
    RUN_GATE = "run.gate"  # the workspace's gate ran in its worktree
    RUN_SUCCEEDED = "run.succeeded"
    RUN_FAILED = "run.failed"
    RUN_TIMED_OUT = "run.timed_out"
    RUN_LOST = "run.lost"
    RUN_CANCELLED = "run.cancelled"
    RUN_SKIPPED = "run.skipped"
    ATTEMPT_SUCCEEDED = "attempt.succeeded"
    ATTEMPT_FAILED = "attempt.failed"
    ATTEMPT_TIMED_OUT = "attempt.timed_out"
    ATTEMPT_LOST = "attempt.lost"
    ATTEMPT_CANCELLED = "attempt.cancelled"
    ATTEMPT_HANDED_BACK = "attempt.handed_back"
    ATTEMPT_RATE_LIMITED = "attempt.rate_limited"
    ATTEMPT_HARVESTED = "attempt.harvested"  # it ended while no worker watched; its exit record says how
    AGGREGATION_COMPUTED = "aggregation.computed"
    # The merge queue: a step reaching each state, the pre-check's matrix, the integration branch reset.
    MERGE_QUEUED = "merge.queued"
    MERGE_WAITING = "merge.waiting"
    MERGE_MERGED = "merge.merged"
    MERGE_CONFLICT = "merge.conflict"
    MERGE_RESOLVING = "merge.resolving"
    MERGE_RERUNNING = "merge.rerunning"
    MERGE_GATE_FAILED = "merge.gate_failed"
    MERGE_SKIPPED = "merge.skipped"
    MERGE_REVERTED = "merge.reverted"
    MERGE_MATRIX = "merge.matrix"
    MERGE_RESET = "merge.reset"
    ESCALATION_OPENED = "escalation.opened"
    ESCALATION_ASSIGNED = "escalation.assigned"
    ESCALATION_RESOLVED = "escalation.resolved"
    ESCALATION_DISMISSED = "escalation.dismissed"
    REVIEW_APPROVE = "review.approve"
    REVIEW_REQUEST_CHANGES = "review.request_changes"
    REVIEW_COMMENT = "review.comment"

    @classmethod
    def of(cls, subject: str, status: str) -> EventKind:
        """The event that records `subject` ("run", "attempt", "batch", ...) reaching `status`."""
        return cls(f"{subject}.{status}")


ESCALATION_EVENTS = frozenset(k for k in EventKind if k.startswith("escalation."))
REVIEW_EVENTS = frozenset(k for k in EventKind if k.startswith("review."))
MERGE_EVENTS = frozenset(k for k in EventKind if k.startswith("merge."))
FANIN_EVENTS = ESCALATION_EVENTS | REVIEW_EVENTS | {EventKind.AGGREGATION_COMPUTED}
