"""What the API answers, as schemas (the OpenAPI document is generated from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from ninja import Field, Schema


class Problem(Schema):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str


class SpecFieldError(Schema):
    task: str | None = Field(None, description="The task's key, when the error concerns a task that has one.")
    index: int | None = Field(None, description="The task's position in `tasks`, from 0.")
    field: str
    line: int | None = Field(None, description="Line in the spec's text, from 1.")
    message: str
    where: str


class SpecProblem(Problem):
    errors: list[SpecFieldError]


class Timings(Schema):
    wall_seconds: float | None = Field(
        None, description="Busy time: launch to end, minus idle waits for a person's retry."
    )
    since_launch_seconds: float | None = Field(None, description="Launch to end (or now), idle time included.")
    idle_seconds: float | None = Field(None, description="Time the batch sat ended until a person's retry reopened it.")
    sum_seconds: float | None = Field(None, description="Work: the sum of every attempt's running time.")
    critical_path_seconds: float | None
    speedup: float | None = Field(None, description="Parallelism, work over wall (an estimate); see compare.")
    parallelism: float | None = Field(None, description="Work over wall.")
    efficiency: float | None


class OwnPass(Schema):
    wall_seconds: float | None = Field(None, description="Wall of the batch's own pass (a person's retries left out).")
    work_seconds: float | None
    left_out_attempts: int = Field(0, description="Attempts a person asked for afterwards, not counted.")


class BatchRow(Schema):
    id: int
    name: str
    owner: str | None
    status: str
    mode: str
    cancel_requested: bool
    launched_at: datetime
    finished_at: datetime | None
    counts: dict[str, int]
    timings: Timings
    url: str


class BatchPage(Schema):
    count: int
    page: int
    pages: int
    page_size: int
    items: list[BatchRow]


class RunSummary(Schema):
    id: int
    key: str
    agent_type: str
    priority: str
    wave: int
    status: str
    attempts: int
    exit_code: int | None
    duration_seconds: float | None
    error: str
    result: Any = None
    result_error: str
    output_tail: str
    tokens: int | None = None
    cost_usd: float | None
    cost_note: str = ""
    usage: dict[str, Any] | None = None
    changes: dict[str, Any] | None = None
    url: str


class BatchDetail(Schema):
    id: int
    batch: int = Field(description="The same as id: the summary `manage.py spawn --json` prints has it.")
    name: str
    owner: str | None
    status: str
    mode: str
    max_parallel: int
    cancel_requested: bool
    launched_at: datetime
    finished_at: datetime | None
    sequential_of: int | None
    counts: dict[str, int]
    timings: Timings
    open_escalations: int
    cost: dict[str, Any]
    succeeded: list[str]
    failed: list[str]
    aggregation: dict[str, Any] | None
    runs: list[RunSummary]
    url: str


class PlanOut(Schema):
    name: str
    mode: str
    max_parallel: int
    tasks: int
    waves: list[list[str]]
    order: list[str]
    critical_path: list[str]
    critical_path_seconds: float
    sum_seconds: float
    estimated_wall_seconds: float
    estimated_speedup: float
    durations_known: bool
    checks: list[dict[str, Any]]
    warnings: list[str]
    cost: dict[str, Any]


class RetryFailedOut(Schema):
    retried: list[str]
    not_retried: list[str]


class CompareSide(Schema):
    id: int
    name: str
    mode: str
    status: str
    timings: Timings
    own_pass: OwnPass | None = None


class CompareOut(Schema):
    parallel: CompareSide
    sequential: CompareSide | None
    measured_speedup: float | None = Field(
        None,
        description="Sequential wall over parallel wall, each batch's own pass (as the compare page and "
        "`spawn --compare` show it); null while either runs or when either was cancelled.",
    )


class AttemptOut(Schema):
    number: int
    status: str
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    exit_code: int | None
    error: str
    host: str
    cluster: str = Field("", description="The name of the cluster that ran it (SPAWNER_CLUSTER_NAME).")
    log_bytes: int | None = Field(None, description="Size of the full log, when this server can read it.")
    branch: str
    head_commit: str
    changes: dict[str, Any] | None
    usage: dict[str, Any] | None


class RunDetail(RunSummary):
    batch: int
    role: str
    prompt: str
    depends_on: list[str]
    files: list[str]
    timeout: int
    retries: int
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    dependents: list[str]


class OK(Schema):
    detail: str


class ReviewIn(Schema):
    decision: Literal["approve", "request_changes", "comment"]
    comment: str = Field("", max_length=20_000)


class ReviewOut(Schema):
    id: int
    author: str
    decision: str
    comment: str
    created_at: datetime


class ReviewsOut(Schema):
    state: str = Field(description="approved, changes_requested or pending: each reviewer's latest decision.")
    reviews: list[ReviewOut]


class EscalationOut(Schema):
    id: int
    batch: int
    run: int | None
    run_key: str | None
    kind: str
    reason: str
    state: str
    assignee: str | None
    resolution: str
    resolution_note: str
    resolved_by: str | None
    created_at: datetime
    resolved_at: datetime | None


class EscalationPage(Schema):
    count: int
    page: int
    pages: int
    page_size: int
    items: list[EscalationOut]


class AssignIn(Schema):
    assignee: str | None = Field(None, max_length=150, description="A username; null: nobody.")


class ResolveIn(Schema):
    action: Literal["retry", "accept", "dismiss"]
    note: str = Field("", max_length=20_000)


class AgentTypeOut(Schema):
    name: str
    description: str
    kind: str
    available: bool
    unavailable_reason: str
    admin_only: bool
    default_timeout: int | None
    max_concurrency: int | None
    prompt_kind: str
    model: str


class RoleOut(Schema):
    name: str
    template: str


class FindingsOut(Schema):
    strategy: str
    total: int
    findings: list[dict[str, Any]]


# --- saved templates --------------------------------------------------------------------------


class TemplateVariable(Schema):
    name: str
    default: str | None = Field(None, description="null: required at launch.")


class TemplateLaunchRow(Schema):
    id: int
    status: str
    launched_at: datetime
    wall_seconds: float | None
    cost_usd: float | None
    url: str


class ScheduleOut(Schema):
    id: int
    template: int
    cron: str
    timezone: str
    paused: bool
    next_run: datetime | None
    variables: dict[str, str]
    run_as: str | None = Field(None, description="Who the scheduled launches run as (who scheduled it).")
    url: str


class TemplateOut(Schema):
    id: int
    name: str
    owner: str | None = Field(None, description="null: a global template.")
    description: str
    variables: list[TemplateVariable]
    spec_text: str = Field(description="The spec, with ${name} where a variable is filled in.")
    schedules: list[ScheduleOut]
    launches: list[TemplateLaunchRow] = Field(description="The newest batches launched from it (at most 50).")
    url: str


class TemplateLaunchIn(Schema):
    variables: dict[str, str] = Field(default_factory=dict, description="Values of the template's variables.")


class TemplateIn(Schema):
    name: str = Field(max_length=100, description="Letters, digits, - and _; unique among yours (or the global ones).")
    spec_text: str = Field(max_length=1_000_000, description="The batch spec (YAML or JSON) with ${name} variables.")
    variables: dict[str, str | None] = Field(
        default_factory=dict, description="Every variable the spec uses: {name: default}; null: required at launch."
    )
    description: str = Field("", max_length=300)
    shared: bool = Field(False, description="A global template, for everyone (admins only; on creation).")


class ScheduleIn(Schema):
    cron: str = Field(max_length=100, description="A cron expression, e.g. `0 3 * * 1-5`.")
    timezone: str = Field("UTC", max_length=64, description="An IANA time zone the cron is read in.")
    variables: dict[str, str] = Field(default_factory=dict, description="Values of the template's variables.")


class ClusterOut(Schema):
    name: str
    host: str
    pid: int
    version: str
    state: str = Field(description="running, draining, or silent (no heartbeat within the lease)")
    workers: int
    busy: int = Field(description="Attempts running in this cluster.")
    started_at: datetime
    last_heartbeat: datetime
    heartbeat_age_seconds: float
    drain_requested_at: datetime | None
    drain_requested_by: str


# --- the merge queue and best of N ------------------------------------------------------------


class MergeStepOut(Schema):
    id: int
    position: int
    run_id: int
    key: str = Field(description="The run's key.")
    state: str = Field(
        description="queued, waiting (manual mode: a person picks it), merged, conflict, resolving (by hand), "
        "rerunning (on top of the integration branch), gate_failed, skipped or reverted."
    )
    merge_commit: str
    merged_head: str = Field(description="The run's branch head it merged.")
    revert_commit: str
    conflict_files: list[str]
    conflict_kinds: dict[str, str]
    hunks: dict[str, list[dict[str, Any]]] = Field(description="Per conflicting file: line, ours, theirs, text.")
    gate_output: str
    resolution: dict[str, Any] | None = Field(None, description="What a person chose: sides per file, by hand.")
    worktree: str = Field(description="While resolving by hand: the worktree to edit.")
    error: str
    escalation: int | None = Field(None, description="Its open conflict or merge-gate escalation.")
    acted_by: str | None
    merged_at: datetime | None
    updated_at: datetime
    actions: list[str] = Field(
        description="What may be done now (merge, skip, revert, keep_sides, rerun, by_hand, resolved); "
        "the rest is refused with a 409."
    )


class ConflictPair(Schema):
    a: str
    b: str
    files: list[str]


class ConflictMatrix(Schema):
    runs: list[str] = Field(description="The runs' keys, in queue order.")
    pairs: list[ConflictPair] = Field(description="Only the pairs that conflict, with the files they conflict on.")
    integration: dict[str, list[str]] = Field(description="Runs that conflict with the integration head: files.")
    checked_pairs: int
    computed_at: datetime | None


class IntegrationOut(Schema):
    branch: str
    head: str
    summary: dict[str, Any] | None = Field(None, description="files (path, added, removed), added, removed, changed.")
    diff: str = Field(description="The integration branch against the checkpoint, as a unified diff.")
    truncated: bool


class MergeQueueOut(Schema):
    batch: int
    mode: str = Field(description="The workspace's merge mode: sequential or manual.")
    gate: bool = Field(description="Whether a gate command checks each merge.")
    repo: str
    checkpoint: str
    integration_branch: str
    integration_head: str
    counts: dict[str, int] = Field(description="Steps per state.")
    steps: list[MergeStepOut]
    matrix: ConflictMatrix | None = Field(None, description="The pre-check's conflict matrix; null before it ran.")
    integration: IntegrationOut
    take_commands: list[str] = Field(description="What to type to take the integration branch into your own.")
    candidates_url: str = Field(description="Best of N: the runs side by side.")


class MergeActionOut(Schema):
    detail: str
    step: MergeStepOut = Field(description="The step after the action.")
    commit: str | None = Field(None, description="revert: the revert commit; resolved: the resolution's commit.")
    attempt: int | None = Field(None, description="rerun: the new attempt's number.")
    worktree: str | None = Field(None, description="by-hand: the worktree holding the conflict to edit.")
    files: list[str] | None = Field(None, description="by-hand: the files with conflict markers.")


class KeepSidesIn(Schema):
    sides: dict[str, Literal["ours", "theirs"]] = Field(
        max_length=10_000,
        description="Every conflicting file: ours (the integration branch) or theirs (the run).",
    )


class MergeResetOut(Schema):
    detail: str
    queue: MergeQueueOut


class CandidateStep(Schema):
    id: int
    state: str


class CandidateOut(Schema):
    id: int = Field(description="The run's id (what to pick).")
    key: str
    agent_type: str
    status: str
    error: str
    duration_seconds: float | None
    gate: bool | None = Field(None, description="Whether its gate passed; null without a gate.")
    gate_exit: int | None
    changes: dict[str, Any]
    usage: dict[str, Any] | None
    cost_usd: float | None
    diff: str
    truncated: bool
    step: CandidateStep | None = Field(None, description="Its place in the merge queue.")
    winner: bool = Field(description="Whether the aggregation picked it.")


class CandidatesOut(Schema):
    batch: int
    aggregation: str
    gate: bool
    merge_mode: str
    winner: str | None
    verdict: Any = None
    candidates: list[CandidateOut]


class PickOut(Schema):
    detail: str
    done: list[str] = Field(description="What the pick did, one line each.")
