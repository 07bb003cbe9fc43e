"""What Spawner stores: agent types and roles, batches, runs, attempts and the event log."""

from __future__ import annotations

import shutil

from django.conf import settings
from django.core.validators import URLValidator
from django.db import models

from spawner.states import (
    AgentKind,
    AttemptStatus,
    BatchStatus,
    FailurePolicy,
    Mode,
    OutputFormat,
    Priority,
    PromptVia,
    RunStatus,
)


class AgentType(models.Model):
    """An admin-defined way to run an agent: which command, and how the prompt reaches it."""

    class PromptKind(models.TextChoices):
        TEXT = "text", "text (an instruction, for coding agents)"
        PATH = "path", "path (one path or pytest node id inside the run's working directory)"

    name = models.SlugField(max_length=64, unique=True)
    description = models.CharField(max_length=200, blank=True)
    kind = models.CharField(
        max_length=8,
        choices=AgentKind.choices,
        default=AgentKind.COMMAND,
        help_text="A command runs as a local process; a model is one call to an OpenAI-compatible endpoint.",
    )
    argv = models.JSONField(
        default=list,
        blank=True,
        help_text='Command as a list, e.g. ["claude", "-p", "{prompt}"]. Placeholders: '
        "{prompt}, {prompt_file}, {result_file}, {key}. Never run through a shell.",
    )
    prompt_via = models.CharField(max_length=8, choices=PromptVia.choices, default=PromptVia.ARG)
    prompt_kind = models.CharField(
        max_length=8,
        choices=PromptKind.choices,
        default=PromptKind.TEXT,
        help_text="What the prompt is. Tools that load the files they are given (pytest) take a path, "
        "confined to the run's working directory.",
    )
    output_format = models.CharField(
        max_length=16,
        choices=OutputFormat.choices,
        default=OutputFormat.NONE,
        blank=True,
        help_text="How to read the agent's output: with a JSON output mode, its final message becomes the run's "
        "result when it wrote no SPAWNER_RESULT_FILE (a fenced ```json block in it, or the text as the summary).",
    )
    env = models.JSONField(default=dict, blank=True, help_text="Extra environment variables.")
    secret_names = models.JSONField(
        default=list,
        blank=True,
        help_text="Names of server environment variables passed through at spawn time. Their values are never stored.",
    )
    success_exit_codes = models.JSONField(default=list, blank=True, help_text="Default [0].")
    default_timeout = models.PositiveIntegerField(null=True, blank=True)
    max_concurrency = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many runs of this type at once, everywhere."
    )
    spawn_stagger_seconds = models.FloatField(
        default=0, help_text="Minimum gap between two starts (agents sharing one rate limit)."
    )
    admin_only = models.BooleanField(default=False, help_text="Only staff may launch it.")
    enabled = models.BooleanField(default=True)
    # A model agent (kind "model"): one streamed chat-completions call (spawner.runners.model).
    base_url = models.CharField(
        max_length=500,
        blank=True,
        validators=[URLValidator(schemes=["http", "https"])],
        help_text="Model: the API's base URL, up to /v1, e.g. http://127.0.0.1:8000/v1 (vLLM), "
        "http://127.0.0.1:11434/v1 (Ollama), http://127.0.0.1:8080/v1 (llama.cpp), https://api.openai.com/v1.",
    )
    model = models.CharField(max_length=200, blank=True, help_text="Model: the model name the endpoint serves.")
    api_key_secret = models.CharField(
        max_length=100,
        blank=True,
        help_text="Model: the name of the server environment variable holding the API key (read at run time, "
        "never stored; added to the secret names). Empty: no key (local servers).",
    )
    system_prompt = models.TextField(blank=True, help_text="Model: the system message.")
    temperature = models.FloatField(null=True, blank=True, help_text="Model: sampling temperature (empty: the API's).")
    max_tokens = models.PositiveIntegerField(null=True, blank=True, help_text="Model: most tokens in the answer.")
    response_schema = models.JSONField(
        null=True,
        blank=True,
        help_text="Model: a JSON schema for structured output; the parsed answer becomes the run's result. "
        'Empty: the answer is the result\'s "summary".',
    )
    # Rate limits (any kind): enforced by the scheduler, and a run that hits one waits without spending a retry.
    requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many starts (model calls) of this type in any minute."
    )
    tokens_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Hold new starts while the tokens this type's runs used in the last minute reach this.",
    )
    rate_limit_pattern = models.CharField(
        max_length=300,
        blank=True,
        help_text="Command: a regular expression (case-insensitive) that, found in the end of a failed run's "
        'output, means it hit a rate limit, e.g. "rate.?limit|429|quota exceeded".',
    )
    rate_limit_exit_codes = models.JSONField(
        default=list, blank=True, help_text="Command: exit codes that mean a rate limit, e.g. [75]."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_model(self) -> bool:
        return self.kind == AgentKind.MODEL

    @property
    def executable(self) -> str:
        return str(self.argv[0]) if self.argv and not self.is_model else ""

    @property
    def available(self) -> bool:
        if self.is_model:
            return self.enabled and bool(self.base_url and self.model)
        return self.enabled and bool(self.executable) and shutil.which(self.executable) is not None

    @property
    def unavailable_reason(self) -> str:
        if not self.enabled:
            return "disabled by an admin"
        if not self.available:
            if self.is_model:
                return "a model agent type needs a base URL and a model"
            return f"{self.executable!r} is not on this server's PATH"
        return ""

    def clean(self) -> None:
        """A model type needs its endpoint and model; a command type its argv. The key is a secret."""
        from django.core.exceptions import ValidationError

        errors = {}
        if self.is_model:
            if not self.base_url:
                errors["base_url"] = "A model agent type needs the endpoint's base URL."
            if not self.model:
                errors["model"] = "A model agent type needs a model name."
            if self.response_schema is not None and not isinstance(self.response_schema, dict):
                errors["response_schema"] = "A JSON schema is an object."
            if self.api_key_secret and self.api_key_secret not in (self.secret_names or []):
                self.secret_names = [*(self.secret_names or []), self.api_key_secret]
        elif not self.argv or not isinstance(self.argv, list):
            errors["argv"] = "A command agent type needs its command as a list."
        if self.rate_limit_pattern:
            import re

            try:
                re.compile(self.rate_limit_pattern)
            except re.error as exc:
                errors["rate_limit_pattern"] = f"Not a regular expression: {exc}"
        codes = self.rate_limit_exit_codes or []
        if not isinstance(codes, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in codes):
            errors["rate_limit_exit_codes"] = "A list of integers, e.g. [75]."
        if errors:
            raise ValidationError(errors)

    @property
    def exit_codes(self) -> list[int]:
        return list(self.success_exit_codes) or [0]


class Role(models.Model):
    """A prompt template for one of the roles (explorer, implementer, ...)."""

    name = models.SlugField(max_length=64, unique=True)
    template = models.TextField(help_text="Variables as {{ name }}; {{ task }} is the task's prompt.")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Batch(models.Model):
    name = models.CharField(max_length=200)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    spec = models.JSONField(help_text="The spec as submitted (parsed).")
    spec_text = models.TextField(blank=True)
    mode = models.CharField(max_length=12, choices=Mode.choices, default=Mode.PARALLEL)
    max_parallel = models.PositiveIntegerField(default=3)
    failure_policy = models.CharField(max_length=12, choices=FailurePolicy.choices, default=FailurePolicy.CONTINUE)
    backoff_seconds = models.FloatField(default=2.0, help_text="First retry delay; doubles each time.")
    aggregation = models.CharField(max_length=20, blank=True)
    cwd = models.CharField(max_length=500, blank=True)
    webhook_url = models.URLField(blank=True, help_text="Called (POST, JSON) when the batch ends or escalates.")
    webhook_format = models.CharField(
        max_length=8, default="json", help_text='The webhook body: "json" (the event) or "slack" ({"text": ...}).'
    )
    status = models.CharField(max_length=12, choices=BatchStatus.choices, default=BatchStatus.RUNNING, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    sequential_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sequential_reruns",
        help_text="The parallel batch this one re-runs sequentially, for comparison.",
    )
    launched_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    wall_seconds = models.FloatField(null=True, blank=True)
    sum_seconds = models.FloatField(null=True, blank=True)
    critical_path_seconds = models.FloatField(null=True, blank=True)
    speedup = models.FloatField(null=True, blank=True)
    efficiency = models.FloatField(null=True, blank=True)
    # Budgets (spawner.core.budget): no new run starts once spent + running estimates would pass it.
    budget_usd = models.FloatField(null=True, blank=True, help_text="The batch's budget in USD; null: none.")
    on_budget = models.CharField(
        max_length=16, blank=True, help_text="skip_pending (default) or cancel_running when the budget is reached."
    )
    template = models.ForeignKey(
        "BatchTemplate",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="launches",
        help_text="The saved template this batch was launched from.",
    )

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "batches"
        permissions = [
            ("cancel_batch", "Can cancel batches and runs"),
            ("review_batch", "Can review a batch's combined result (approve, request changes)"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.name}"


class Workspace(models.Model):
    """The git repository a batch's coding agents change, and how: one worktree and branch per run,
    from a checkpoint commit recorded at launch; the user's own checkout is never touched."""

    class Isolation(models.TextChoices):
        NONE = "none"
        WORKTREE = "worktree"

    class MergeMode(models.TextChoices):
        NONE = "none"
        SEQUENTIAL = "sequential"
        MANUAL = "manual"

    class ScopePolicy(models.TextChoices):
        WARN = "warn"
        FAIL = "fail"
        ESCALATE = "escalate"

    batch = models.OneToOneField(Batch, on_delete=models.CASCADE, related_name="workspace")
    repo = models.CharField(max_length=500, help_text="The repository's top-level directory.")
    isolation = models.CharField(max_length=10, choices=Isolation.choices, default=Isolation.WORKTREE)
    base = models.CharField(max_length=200, default="HEAD", help_text="The branch, tag or commit asked for.")
    checkpoint = models.CharField(max_length=64, help_text="The commit every run starts from.")
    snapshot = models.BooleanField(default=False, help_text="The checkpoint holds uncommitted changes.")
    setup = models.TextField(blank=True)
    gate = models.TextField(blank=True)
    merge_mode = models.CharField(max_length=12, choices=MergeMode.choices, default=MergeMode.SEQUENTIAL)
    scope_policy = models.CharField(max_length=10, choices=ScopePolicy.choices, default=ScopePolicy.WARN)
    root = models.CharField(max_length=500, help_text="Where this batch's worktrees live.")
    # The merge queue (spawner.engine.merging): the integration branch's head and what it holds.
    integration_head = models.CharField(max_length=64, blank=True, help_text="The integration branch's head.")
    integration_changes = models.JSONField(
        null=True, blank=True, help_text="Diff summary of the integration branch against the checkpoint."
    )
    conflict_matrix = models.JSONField(
        null=True, blank=True, help_text="Pre-check: which pairs of runs conflict, on which files."
    )
    matrix_at = models.DateTimeField(null=True, blank=True, help_text="When the conflict matrix was computed.")
    merge_send_due = models.DateTimeField(
        null=True, blank=True, help_text="The merge queue's task is owed to the broker (the outbox); see RunAttempt."
    )

    def __str__(self) -> str:
        return f"workspace of batch {self.batch_id}"


class MergeStep(models.Model):
    """One succeeded run's place in its batch's merge queue: merged onto the integration branch
    in plan order, or waiting for a person (a conflict, a failed gate, manual mode)."""

    class State(models.TextChoices):
        QUEUED = "queued"
        WAITING = "waiting", "waiting (manual: a person picks it)"
        MERGED = "merged"
        CONFLICT = "conflict"
        RESOLVING = "resolving", "resolving by hand"
        RERUNNING = "rerunning", "re-running on the integration branch"
        GATE_FAILED = "gate_failed", "gate failed on the merge"
        SKIPPED = "skipped"
        REVERTED = "reverted"

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="merge_steps")
    run = models.OneToOneField("AgentRun", on_delete=models.CASCADE, related_name="merge_step")
    position = models.PositiveIntegerField(help_text="Its place in the queue: plan order, priority first in a wave.")
    state = models.CharField(max_length=12, choices=State.choices, default=State.QUEUED, db_index=True)
    merge_commit = models.CharField(max_length=64, blank=True)
    merged_head = models.CharField(max_length=64, blank=True, help_text="The run's branch head it merged.")
    revert_commit = models.CharField(max_length=64, blank=True)
    conflict = models.JSONField(null=True, blank=True, help_text="Files, their kinds and hunks, against what head.")
    resolution = models.JSONField(null=True, blank=True, help_text="What a person chose (sides per file, by hand).")
    rerun_attempt = models.PositiveIntegerField(null=True, blank=True, help_text="The attempt re-running it on top.")
    error = models.TextField(blank=True)
    acted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    merged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["batch", "position"]

    def __str__(self) -> str:
        return f"merge step {self.batch_id}/{self.position} ({self.state})"


class AgentRun(models.Model):
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="runs")
    key = models.CharField(max_length=100)
    agent_type = models.ForeignKey(AgentType, on_delete=models.PROTECT, related_name="runs")
    role = models.CharField(max_length=64, blank=True)
    prompt = models.TextField(blank=True)
    priority = models.PositiveSmallIntegerField(choices=Priority.choices, default=Priority.P1)
    depends_on = models.JSONField(default=list, blank=True)
    files = models.JSONField(default=list, blank=True)
    timeout = models.PositiveIntegerField()
    retries = models.PositiveIntegerField(default=0)
    cwd = models.CharField(max_length=500, blank=True)
    order = models.PositiveIntegerField(help_text="Position in plan order.")
    wave = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=12, choices=RunStatus.choices, default=RunStatus.PENDING, db_index=True)
    attempt = models.PositiveIntegerField(default=0, help_text="Number of the current attempt.")
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    output_tail = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True)
    result_error = models.TextField(blank=True)
    changes = models.JSONField(
        null=True, blank=True, help_text="Diff summary of its worktree's commit: files, +/-, outside its scope."
    )
    usage = models.JSONField(
        null=True,
        blank=True,
        help_text="Tokens and cost over all its attempts: input_tokens, output_tokens, cache_read_tokens, "
        "cache_write_tokens, cost_usd (null: unknown), models, turns, source, cost_note.",
    )
    cost_usd = models.FloatField(null=True, blank=True, help_text="Total cost of its attempts; null: unknown.")
    rate_limited_until = models.DateTimeField(
        null=True, blank=True, help_text="Queued after a rate limit: its next attempt waits until then."
    )
    budget_usd = models.FloatField(null=True, blank=True, help_text="The task's own budget in USD (spec).")
    estimate_usd = models.FloatField(null=True, blank=True, help_text="The task's declared cost estimate (spec).")

    class Meta:
        ordering = ["batch", "order"]
        constraints = [models.UniqueConstraint(fields=["batch", "key"], name="unique_run_key")]

    def __str__(self) -> str:
        return f"{self.batch_id}/{self.key}"

    @property
    def status_label(self) -> str:
        """What the pages show: the status, or "waiting: rate limited" for a run queued after a rate limit."""
        if self.status == RunStatus.QUEUED and self.rate_limited_until:
            return "waiting: rate limited"
        return _RUN_LABELS.get(self.status, self.status)  # a dict, not the field's choices per call (big grids)


_RUN_LABELS = {value: str(label) for value, label in RunStatus.choices}


class RunAttempt(models.Model):
    run = models.ForeignKey(AgentRun, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=12, choices=AttemptStatus.choices, default=AttemptStatus.QUEUED, db_index=True)
    not_before = models.DateTimeField(help_text="Backoff or stagger: do not start earlier.")
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    log_path = models.CharField(max_length=500, blank=True)
    host = models.CharField(max_length=200, blank=True)
    worker_pid = models.IntegerField(null=True, blank=True)
    pgid = models.IntegerField(null=True, blank=True)
    held_by = models.CharField(
        max_length=220, blank=True, help_text="The name of the cluster whose queue holds this queued attempt."
    )
    cluster = models.CharField(max_length=200, blank=True, help_text="The name of the cluster that ran it.")
    sent_at = models.DateTimeField(null=True, blank=True, help_text="Last time it was sent again (recovery).")
    send_due = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Its broker message is owed (the outbox): a cluster's sender loop sends it from then on; "
        "cleared once the broker took it. Never set with the ORM broker (the message is a row of the same commit).",
    )
    worktree = models.CharField(max_length=500, blank=True, help_text="Its git worktree, while it exists.")
    branch = models.CharField(max_length=250, blank=True)
    base_commit = models.CharField(max_length=64, blank=True, help_text="What its worktree started from.")
    head_commit = models.CharField(max_length=64, blank=True, help_text="Its branch after its changes were committed.")
    changes = models.JSONField(null=True, blank=True)
    usage = models.JSONField(null=True, blank=True, help_text="Tokens and cost of this attempt (see AgentRun.usage).")
    # A re-run on top of the integration branch (a merge conflict's resolution): where its worktree
    # starts instead of the checkpoint, and what is added to its prompt.
    start_commit = models.CharField(max_length=64, blank=True)
    prompt_note = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "number"]
        constraints = [models.UniqueConstraint(fields=["run", "number"], name="unique_attempt_number")]
        # Only the few rows whose message is owed: the sender loop's query stays cheap at any size.
        indexes = [
            models.Index(fields=["send_due"], name="attempt_send_due", condition=models.Q(send_due__isnull=False))
        ]

    def __str__(self) -> str:
        return f"{self.run} attempt {self.number}"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class LogChunk(models.Model):
    """A piece of a running attempt's output, masked, for web servers on other machines (only when
    finished logs go to a shared storage; see spawner/engine/logstore.py). Removed once the attempt's
    files are stored."""

    attempt = models.ForeignKey(RunAttempt, on_delete=models.CASCADE, related_name="log_chunks")
    start = models.BigIntegerField(help_text="Offset of its first byte in the (masked) log.")
    end = models.BigIntegerField()
    data = models.BinaryField()

    class Meta:
        ordering = ["attempt", "start"]
        indexes = [models.Index(fields=["attempt", "start"])]


class RunEvent(models.Model):
    """The append-only event log: the audit trail and the source of everything live."""

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="events")
    run = models.ForeignKey(AgentRun, null=True, blank=True, on_delete=models.CASCADE, related_name="events")
    attempt = models.PositiveIntegerField(null=True, blank=True)
    kind = models.CharField(max_length=40)
    status = models.CharField(max_length=12, blank=True)
    data = models.JSONField(default=dict, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["batch", "id"])]

    def __str__(self) -> str:
        return f"{self.id} {self.kind}"


class WorkerHeartbeat(models.Model):
    """The cluster registry: each live cluster (qcluster + reaper) says here, every reaper step, that it
    is alive, what it runs and whether it drains. Its `name` identifies it (held attempts, attempts'
    `cluster`); no two live clusters share one."""

    class State(models.TextChoices):
        STARTING = "starting"  # joined under its name; its workers are not up yet
        RUNNING = "running"
        DRAINING = "draining"

    name = models.CharField(max_length=200, help_text="SPAWNER_CLUSTER_NAME, or host:pid.")
    host = models.CharField(max_length=200)
    pid = models.IntegerField()
    version = models.CharField(max_length=100, blank=True, help_text="Spawner's version and git commit.")
    workers = models.PositiveIntegerField()
    busy = models.PositiveIntegerField(default=0, help_text="Attempts running in this cluster.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.RUNNING)
    drain_requested_at = models.DateTimeField(null=True, blank=True, help_text="An admin asked it to drain.")
    drain_requested_by = models.CharField(max_length=150, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    seen_at = models.DateTimeField(help_text="Its last heartbeat.")

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["host", "pid"], name="unique_worker"),
            models.UniqueConstraint(fields=["name"], name="unique_cluster_name"),
        ]

    def __str__(self) -> str:
        return self.name


class Aggregation(models.Model):
    """The combined result of a batch, recomputed whenever the batch ends (again)."""

    batch = models.OneToOneField(Batch, on_delete=models.CASCADE, related_name="aggregation_result")
    strategy = models.CharField(max_length=20)
    status = models.CharField(max_length=12)  # complete, partial, escalated, empty
    data = models.JSONField()
    computed_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"aggregation of {self.batch}"


class Escalation(models.Model):
    """Something a person must decide: a failed P0 run, a vote without a clear winner, a lost run."""

    class Kind(models.TextChoices):
        P0_FAILED = "p0_failed", "P0 run failed"
        LOST = "lost", "run lost, retries spent"
        VOTE = "vote", "vote tie or no quorum"
        SCOPE = "scope", "changed files outside its scope"
        CONFLICT = "conflict", "merge conflict"
        MERGE_GATE = "merge_gate", "gate failed on the integration branch"
        BUDGET = "budget", "budget reached"

    class State(models.TextChoices):
        OPEN = "open"
        RESOLVED = "resolved"
        DISMISSED = "dismissed"

    class Resolution(models.TextChoices):
        RETRIED = "retried", "retried the run"
        ACCEPTED = "accepted", "accepted the partial result"
        DISMISSED = "dismissed", "dismissed"
        SUPERSEDED = "superseded", "the run succeeded later"
        SIDES = "sides", "kept one side per file"
        BY_HAND = "by_hand", "resolved by hand"

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="escalations")
    run = models.ForeignKey(AgentRun, null=True, blank=True, on_delete=models.CASCADE, related_name="escalations")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    reason = models.TextField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN, db_index=True)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolution = models.CharField(max_length=12, choices=Resolution.choices, blank=True)
    resolution_note = models.TextField(blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        permissions = [("resolve_escalation", "Can assign and resolve escalations")]

    def __str__(self) -> str:
        return f"escalation #{self.pk} ({self.kind})"


class Review(models.Model):
    """A teammate's sign-off (or not) on a batch's combined result."""

    class Decision(models.TextChoices):
        APPROVE = "approve", "approve"
        REQUEST_CHANGES = "request_changes", "request changes"
        COMMENT = "comment", "comment"

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="reviews")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    decision = models.CharField(max_length=16, choices=Decision.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]


class WebhookDelivery(models.Model):
    """One webhook call to make: written with the event that causes it, sent by the cluster's
    delivery loop (never in an agent's worker), retried with backoff, kept as a record."""

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="webhook_deliveries")
    event = models.CharField(max_length=40)
    url = models.URLField(max_length=2000)
    payload = models.JSONField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(help_text="Due then; a claimed row is pushed forward (its lease).")
    last_status = models.IntegerField(null=True, blank=True, help_text="HTTP status of the last try.")
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Sent to this person's own address (their notification webhook), not the batch's.",
    )
    redelivered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who last sent it again from the delivery log.",
    )
    redelivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["state", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"webhook #{self.pk} {self.event} ({self.state})"


# --- cost: the price table and the daily budgets (spawner.core.pricing, spawner.core.budget) ---


class PersonalWebhook(models.Model):
    """A person's own notification address: what concerns them (an escalation assigned to them, a
    review requested of them) is also sent here, signed like every webhook. Set on their tokens page."""

    class Format(models.TextChoices):
        JSON = "json", "JSON (signed)"
        SLACK = "slack", "Slack-compatible"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="personal_webhook")
    url = models.URLField(max_length=200)
    format = models.CharField(max_length=8, choices=Format.choices, default=Format.JSON)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.user}'s notification webhook"


class ModelPrice(models.Model):
    """What a model's tokens cost, in USD per million tokens, as an admin entered it."""

    model = models.CharField(
        max_length=200, unique=True, help_text="A model name, or a pattern such as claude-sonnet-4* (fnmatch)."
    )
    input_per_mtok = models.FloatField(help_text="USD per million input tokens (not read from the cache).")
    output_per_mtok = models.FloatField(help_text="USD per million output tokens.")
    cache_read_per_mtok = models.FloatField(null=True, blank=True, help_text="USD per million cache-read tokens.")
    cache_write_per_mtok = models.FloatField(null=True, blank=True, help_text="USD per million cache-write tokens.")
    entered_on = models.DateField(help_text="When these prices were entered: prices change, check them.")
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["model"]

    def __str__(self) -> str:
        return f"{self.model} ({self.input_per_mtok}/{self.output_per_mtok} USD per Mtok, {self.entered_on})"


class UserBudget(models.Model):
    """A person's daily budget, set by an admin: a launch that would pass it is refused."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="budget")
    daily_usd = models.FloatField(help_text="USD a day (the server's day, midnight to midnight).")
    note = models.CharField(max_length=300, blank=True)

    def __str__(self) -> str:
        return f"{self.user} {self.daily_usd} USD/day"


# --- the REST API: personal tokens and idempotent launches (spawner.services: token_*, api_launch) ---


class ApiToken(models.Model):
    """A person's token for the REST API: only its SHA-256 is kept; the secret is shown once."""

    class Scope(models.TextChoices):
        READ = "read", "read: look, never change anything"
        LAUNCH = "launch", "launch: also launch, retry, cancel, review and resolve"
        ADMIN = "admin", "admin: also what only an admin may run (when the person is one)"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="The secret's first characters, to recognise it.")
    digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the whole secret, hex.")
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.READ)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"token {self.prefix}… ({self.name}, {self.scope})"


class IdempotencyKey(models.Model):
    """A launch asked with an Idempotency-Key: the same person asking again with the same key gets
    the same batch back, never a second launch."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    request_digest = models.CharField(max_length=64, help_text="SHA-256 of the request body, hex.")
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_per_user")]


# --- saved and scheduled batches (spawner.services: template_*, schedule_*) ---


class BatchTemplate(models.Model):
    """A batch spec saved under a name, with `${name}` variables filled at launch
    (spawner.core.template_vars). A person's own, or global (no owner, made by an admin)."""

    name = models.SlugField(max_length=100)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="batch_templates"
    )
    description = models.CharField(max_length=300, blank=True)
    spec_text = models.TextField(help_text="The batch spec, with ${name} where a variable is filled in.")
    variables = models.JSONField(default=dict, blank=True, help_text="{name: default}; a null default: required.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="template_name_per_owner"),
            models.UniqueConstraint(
                fields=["name"], condition=models.Q(owner__isnull=True), name="template_name_global"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class TemplateSchedule(models.Model):
    """A template launched on a cron schedule: a django-q2 Schedule (type CRON) that calls
    `spawner.templates.scheduled_launch` with this row's id. Paused: the Schedule's repeats is 0."""

    template = models.ForeignKey(BatchTemplate, on_delete=models.CASCADE, related_name="schedules")
    schedule = models.OneToOneField("django_q.Schedule", on_delete=models.CASCADE, related_name="+")
    run_as = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    cron = models.CharField(max_length=100)
    timezone = models.CharField(max_length=64, default="UTC")
    variables = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.template} at {self.cron} ({self.timezone})"
