"""Supervise one attempt: claim it, run it, heartbeat, enforce the timeout, record the result.

Every write here is a conditional update naming the attempt, so a re-delivered
q2 task or a late answer from an attempt that was reaped or cancelled changes nothing.

A database blip (a dropped connection, a restart) does not end the supervision: the step that
failed closes its connection and the next step tries again, the agent keeps running, and its end
is recorded once the database is back (tried again with a backoff until the lease is over: by then
the reaper may have taken the attempt, and the conditional update changes nothing). Each successful
heartbeat renews the agent's lease file; past the fence time without one, the agent's launcher
stops it (see `spawner.engine.recovery`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from spawner.core import agent_output, ratelimit
from spawner.engine import (
    contention,
    dispatch,
    events,
    final_message,
    lifecycle,
    logstore,
    prompts,
    redaction,
    transitions,
    usage,
    workspaces,
)
from spawner.models import AgentRun, AgentType, Batch, Escalation, RunAttempt
from spawner.runners import Invocation, RunnerError, runner_for
from spawner.runners.command import renew_lease, was_fenced
from spawner.runners.model import model_call_for
from spawner.spec import templating
from spawner.states import AttemptStatus, BatchStatus, EventKind, RunStatus

RESULT_MAX_BYTES = 1_000_000
log = logging.getLogger(__name__)
HOST = lifecycle.HOST
# What a lost or restarting database raises (OperationalError is a DatabaseError).
DB_ERRORS = (DatabaseError, InterfaceError)
FINISH_BACKOFF_MAX = 2.0


def conf(name: str):
    return settings.SPAWNER[name]


def fence_seconds() -> float:
    """How long an agent may run without its worker's heartbeat before its launcher stops it: safely
    below the lease after which another cluster may run the attempt again (capped at 0.9 x the lease)."""
    lease = conf("LEASE_SECONDS")
    return min(conf("FENCE_SECONDS") or 0.6 * lease, 0.9 * lease)


def attempt_paths(attempt: RunAttempt) -> tuple[Path, Path, Path]:
    """(log, result, prompt) files of an attempt."""
    run = attempt.run
    folder = Path(conf("LOG_DIR")) / f"batch-{run.batch_id}"
    stem = f"{run.key}.{attempt.number}"
    return folder / f"{stem}.log", folder / f"{stem}.result.json", folder / f"{stem}.prompt.txt"


def read_result(path: Path) -> tuple[dict | list | None, str]:
    """The agent's structured result from SPAWNER_RESULT_FILE: (result, error)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None, ""
    if size > RESULT_MAX_BYTES:
        return None, f"result file is {size} bytes; the limit is {RESULT_MAX_BYTES}"
    try:
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=_no_constant, parse_float=_finite), ""
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        return None, f"result file is not valid JSON: {exc}"
    except RecursionError:
        return None, "result file is not valid JSON: nested too deeply"


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is too large for a JSON number")
    return value


def agent_env(agent_type) -> dict[str, str]:
    """Allowlisted server variables, the type's own env, and its secrets read now."""
    env = {k: os.environ[k] for k in conf("ENV_ALLOWLIST") if k in os.environ}
    env.update({str(k): str(v) for k, v in (agent_type.env or {}).items()})
    missing = [name for name in agent_type.secret_names or [] if name not in os.environ]
    if missing:
        noun = "secret" if len(missing) == 1 else "secrets"
        raise RunnerError(f"{noun} not set in the server's environment: {', '.join(missing)}")
    env.update({name: os.environ[name] for name in agent_type.secret_names or []})
    return env


def dependency_results(run: AgentRun) -> dict[str, dict]:
    """What each dependency of a run produced, for its prompt and SPAWNER_DEPS_FILE."""
    if not run.depends_on:
        return {}
    found = {}
    for dep in AgentRun.objects.filter(batch_id=run.batch_id, key__in=run.depends_on):
        attempt = dep.attempts.filter(number=dep.attempt).first()
        log, result, _ = attempt_paths(attempt) if attempt else (None, None, None)
        found[dep.key] = templating.dependency_view(
            status=dep.status,
            result=dep.result,
            output_tail=dep.output_tail,
            output_file=str(log) if log else "",
            result_file=str(result) if result and result.exists() else "",
        )
    return found


# --- claiming ---------------------------------------------------------------------------


def _still(attempt_id: int, status: str) -> bool:
    return RunAttempt.objects.filter(id=attempt_id, status=status).exists()


def _beat(attempt_id: int, status: str) -> None:
    RunAttempt.objects.filter(id=attempt_id, status=status).update(heartbeat_at=timezone.now())


def _stagger_wait(attempt: RunAttempt, now) -> float:
    """Seconds until this agent type may start another process (it shares a rate limit)."""
    gap = attempt.run.agent_type.spawn_stagger_seconds
    rpm = attempt.run.agent_type.requests_per_minute
    if not gap and not rpm:
        return 0.0
    # The lock order every writer follows: the batch row, then the agent type's. A claim that
    # took the type first would deadlock with a batch advancing (batch, then type) as soon as
    # the claim's event row waits for the batch it refers to.
    Batch.objects.select_for_update(no_key=True).filter(id=attempt.run.batch_id).first()
    AgentType.objects.select_for_update(no_key=True).filter(id=attempt.run.agent_type_id).first()
    wait = 0.0
    if gap:
        last = RunAttempt.objects.filter(
            run__agent_type_id=attempt.run.agent_type_id, started_at__isnull=False
        ).aggregate(last=Max("started_at"))["last"]
        wait = max(0.0, (last + timedelta(seconds=gap) - now).total_seconds()) if last else 0.0
    if rpm:  # retries and rate-limit waits are queued outside the scheduler: the claim checks them too
        wait = max(wait, _rpm_wait(attempt, rpm, now))
    return wait


def _rpm_wait(attempt: RunAttempt, rpm: int, now) -> float:
    """Seconds until one more start of this type keeps every minute at most `rpm` starts."""
    since = now - timedelta(seconds=ratelimit.WINDOW)
    starts = RunAttempt.objects.filter(run__agent_type_id=attempt.run.agent_type_id, started_at__gt=since)
    times = [t.timestamp() for t in starts.values_list("started_at", flat=True)]
    return max(0.0, ratelimit.next_request_at(times, rpm, now.timestamp()) - now.timestamp())


def attempt_claim(attempt: RunAttempt) -> tuple[bool, float]:
    """(claimed, 0) or (False, seconds to wait before trying again); (False, 0) means stale."""
    return contention.again_on_conflict(lambda: _claim(attempt), what=f"claiming attempt {attempt.id}")


def _claim(attempt: RunAttempt) -> tuple[bool, float]:
    now = timezone.now()
    with transaction.atomic():
        # A claim touches its attempt, then its run (the order finish and cancel also follow);
        # only a staggered or rate-limited type needs the batch and type locks first.
        if wait := _stagger_wait(attempt, now):
            return False, wait
        claimed = transitions.attempt_start(
            attempt,
            now=now,
            host=HOST,
            pid=os.getpid(),
            log_path=str(attempt_paths(attempt)[0]),
            cluster=lifecycle.CLUSTER_ID,
        )
    return claimed, 0.0


# --- finishing --------------------------------------------------------------------------


def attempt_finish(
    attempt: RunAttempt,
    *,
    status: str,
    exit_code: int | None = None,
    error: str = "",
    harvested_from: str = "",
    escalation: tuple[str, str] | None = None,
    retry_after: float | None = None,
) -> bool:
    """Record an attempt's end with what it left behind; retry it or close its run; advance the batch.

    False if the attempt was no longer running (reaped, cancelled, or a late answer).
    """
    run = attempt.run
    result, result_error = (None, "")
    log_path, result_path, _ = attempt_paths(attempt)
    # The agent may have printed its secrets: mask them in its files and in all that is stored.
    secrets = redaction.secret_values(run.agent_type)
    redaction.rewrite_file(log_path, secrets)
    redaction.rewrite_file(result_path, secrets)
    if status == AttemptStatus.SUCCEEDED or result_path.exists():
        result, result_error = read_result(result_path)
    if status == AttemptStatus.SUCCEEDED and result is None and not result_error:
        result = final_message.result_from_log(run.agent_type.output_format, log_path)
    result, result_error, error = redaction.mask_json([result, result_error, error], secrets)
    usage.record_attempt_end(attempt, log_path=log_path, result=result, secrets=secrets)  # tokens and cost
    logstore.store_attempt(attempt, secrets, log_path)  # several machines: its files, masked, to the shared storage
    end = transitions.AttemptEnd(
        status=status,
        exit_code=exit_code,
        error=error,
        tail=redaction.read_tail(log_path, conf("TAIL_BYTES"), secrets),
        result=result,
        result_error=result_error,
        harvested_from=harvested_from,
        escalation=escalation,
        retry_after=retry_after,
    )
    bounds = transitions.RateLimitBounds(
        max_waits=conf("RATE_LIMIT_MAX_WAITS"),
        max_total_seconds=conf("RATE_LIMIT_MAX_TOTAL_SECONDS"),
        max_one_wait=conf("RATE_LIMIT_MAX_WAIT_SECONDS"),
    )
    ended = transitions.attempt_end(attempt, end, backoff_cap=conf("BACKOFF_MAX_SECONDS"), rate_limits=bounds)
    logstore.forget_live(attempt.id)  # readers now find the stored files
    if not ended:
        return False
    dispatch.batch_advance(run.batch_id)
    if run.agent_type.max_concurrency:
        # A slot of a capped type opened: other batches may be waiting for it.
        for other in (
            Batch.objects.filter(status=BatchStatus.RUNNING, runs__agent_type_id=run.agent_type_id)
            .exclude(id=run.batch_id)
            .values_list("id", flat=True)
            .distinct()
        ):
            dispatch.batch_advance(other)
    return True


# --- supervising ------------------------------------------------------------------------


class _Database:
    """The supervisor's hold on the database. A step that fails on it closes the connection and says
    so (once per outage); the next step reconnects. Knows when the last heartbeat was accepted."""

    def __init__(self, attempt_id: int, since: float):
        self.attempt_id = attempt_id
        self.away_since: float | None = None  # monotonic
        self.beat_at = since  # wall clock of the last heartbeat the database accepted (at most)
        self.pgid: int | None = None  # the agent's process group, until the database has it

    def call(self, step, *args, default=None, **kwargs):
        try:
            result = step(*args, **kwargs)
        except DB_ERRORS as exc:
            if self.away_since is None:
                self.away_since = time.monotonic()
                log.warning("attempt %s: the database went away (%s); the agent keeps running", self.attempt_id, exc)
            with contextlib.suppress(Exception):
                connection.close()
            return default
        if self.away_since is not None:
            log.warning(
                "attempt %s: the database is back after %.1f s", self.attempt_id, time.monotonic() - self.away_since
            )
            self.away_since = None
        return result

    def beat(self, log_path: Path | None) -> None:
        at = time.time()

        def step() -> bool:
            fields = {"heartbeat_at": timezone.now()}
            if self.pgid is not None:  # a blip lost its first write: what stops an orphan needs it
                fields["pgid"] = self.pgid
            return bool(RunAttempt.objects.filter(id=self.attempt_id, status=AttemptStatus.RUNNING).update(**fields))

        if self.call(step, default=False):
            self.beat_at, self.pgid = at, None
            if log_path is not None:
                renew_lease(log_path, at)

    def silent(self) -> float:
        """Seconds since the last heartbeat the database accepted."""
        return time.time() - self.beat_at


def _finish(db: _Database, attempt: RunAttempt, **end) -> bool:
    """attempt_finish, tried again while the database is away, until the lease since the last accepted
    heartbeat is over (then the reaper owns the attempt: it harvests the exit record, or retries)."""
    deadline = db.beat_at + conf("LEASE_SECONDS") + conf("REAPER_SECONDS")
    pause = 0.1
    while True:
        recorded = db.call(attempt_finish, attempt, default=None, **end)
        if recorded is not None:
            return recorded
        if time.time() + pause > deadline:
            log.error("attempt %s: its end (%s) could not be recorded before its lease ran out", attempt.id, end)
            return False
        time.sleep(pause)
        pause = min(pause * 2, FINISH_BACKOFF_MAX)


def run_attempt(attempt_id: int) -> str:
    """The q2 task body. Returns what happened, for q2's task record."""
    claimed = _claim_when_due(attempt_id)
    if isinstance(claimed, str):
        return claimed
    return _run_claimed(*claimed)


def _claim_when_due(attempt_id: int) -> tuple[RunAttempt, float] | str:
    """Wait out the attempt's backoff or stagger, then claim it: (attempt, when the claim began), or
    what happened instead. A database that goes away meanwhile is waited for (a message this worker
    holds would otherwise strand its attempt), with a backoff, within a bound."""
    pause, deadline = 0.1, time.monotonic() + 10 * conf("LEASE_SECONDS")
    away = None
    while True:
        try:
            claimed = _wait_and_claim(attempt_id)
        except DB_ERRORS as exc:
            if away is None:
                away = time.monotonic()
                log.warning("attempt %s: the database went away before its claim (%s); waiting", attempt_id, exc)
            with contextlib.suppress(Exception):
                connection.close()
            if time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, FINISH_BACKOFF_MAX)
            continue
        if away is not None:
            log.warning("attempt %s: the database is back after %.1f s", attempt_id, time.monotonic() - away)
        return claimed


def _wait_and_claim(attempt_id: int) -> tuple[RunAttempt, float] | str:
    attempt = RunAttempt.objects.select_related("run__agent_type", "run__batch").filter(id=attempt_id).first()
    if attempt is None or attempt.status != AttemptStatus.QUEUED:
        return "stale: attempt is not queued"
    not_before = attempt.not_before
    while True:
        # A worker holding a queued attempt (backoff, stagger) heartbeats too, so the
        # reaper can send it again if this worker dies while waiting.
        if not_before > timezone.now():
            _beat(attempt_id, AttemptStatus.QUEUED)
        last_beat = time.monotonic()
        while (delay := (not_before - timezone.now()).total_seconds()) > 0:
            time.sleep(min(delay, conf("POLL_SECONDS")))
            if not _still(attempt_id, AttemptStatus.QUEUED):
                return "stale: attempt left the queue while waiting"
            if lifecycle.draining():
                return "left queued: this cluster is draining"
            if time.monotonic() - last_beat >= conf("HEARTBEAT_SECONDS"):
                _beat(attempt_id, AttemptStatus.QUEUED)
                last_beat = time.monotonic()
        if lifecycle.draining():  # the stopping cluster releases it to the next one
            return "left queued: this cluster is draining"
        claim_at = time.time()  # at most the heartbeat the claim records: the lease starts no later
        claimed, wait = attempt_claim(attempt)
        if claimed:
            return attempt, claim_at
        if not wait:
            return "stale: attempt already claimed"
        not_before = timezone.now() + timedelta(seconds=wait)


def _run_claimed(attempt: RunAttempt, claim_at: float) -> str:
    run = attempt.run
    log_path, result_path, prompt_path = attempt_paths(attempt)
    deps = dependency_results(run)
    deps_path = log_path.with_name(f"{run.key}.{attempt.number}.deps.json")
    workspace = workspaces.of(run)
    keeper = _Keeper(attempt.id)
    db = _Database(attempt.id, since=claim_at)
    try:
        env = agent_env(run.agent_type)
        cwd = Path(run.cwd or run.batch.cwd or settings.BASE_DIR)
        if workspace:
            with _beating(attempt.id):
                cwd = workspaces.prepare(attempt, workspace, log_path, keeper)
        if deps:
            deps_path.parent.mkdir(parents=True, exist_ok=True)
            deps_path.write_text(json.dumps(deps, ensure_ascii=False, indent=1))
            env["SPAWNER_DEPS_FILE"] = str(deps_path)
        invocation = Invocation(
            argv_template=tuple(str(a) for a in run.agent_type.argv),
            prompt=templating.render_deps(run.prompt, deps)
            + (f"\n\n{attempt.prompt_note}" if attempt.prompt_note else ""),
            prompt_via=run.agent_type.prompt_via,
            key=run.key,
            cwd=cwd,
            log_path=log_path,
            result_path=result_path,
            prompt_path=prompt_path,
            env=env,
            model=model_call_for(
                run.agent_type,
                env,
                connect_timeout=conf("MODEL_CONNECT_TIMEOUT_SECONDS"),
                read_timeout=conf("MODEL_READ_TIMEOUT_SECONDS"),
            )
            if run.agent_type.is_model
            else None,
            fence_seconds=fence_seconds(),
        )
        prompts.check_at_spawn(run.agent_type, invocation.prompt, invocation.cwd)
        db.beat(None)  # the agent's lease starts at a heartbeat the database has
        process = runner_for(run.agent_type).start(dataclasses.replace(invocation, lease_since=db.beat_at))
    except Exception as exc:  # noqa: BLE001 - whatever it was, the attempt failed to start, visibly
        if not isinstance(exc, RunnerError | OSError | ValueError | workspaces.WorkspaceError):
            log.exception("attempt %s could not start", attempt.id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as f:
            f.write(f"spawner: could not start: {exc}\n")
        attempt_finish(attempt, status=AttemptStatus.FAILED, error=f"could not start: {exc}")
        return f"failed to start: {exc}"
    db.pgid = process.pgid
    if db.call(lambda: RunAttempt.objects.filter(id=attempt.id).update(pgid=process.pgid)) is not None:
        db.pgid = None  # stored; else the next heartbeat stores it
    return _supervise(attempt, process, log_path, workspace, keeper, db)


@contextlib.contextmanager
def _beating(attempt_id: int):
    """Heartbeat from a thread while git works (a lock wait, a big checkout or commit): the reaper
    must not take a slow workspace step for a dead worker."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(conf("HEARTBEAT_SECONDS")):
                _beat(attempt_id, AttemptStatus.RUNNING)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name=f"heartbeat-{attempt_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class _Keeper:
    """Called while a workspace step (setup, gate) runs: heartbeats, and says whether to go on."""

    def __init__(self, attempt_id: int):
        self.attempt_id = attempt_id
        self.last = time.monotonic()

    def __call__(self) -> bool:
        try:
            if not _still(self.attempt_id, AttemptStatus.RUNNING):
                return False
            if time.monotonic() - self.last >= conf("HEARTBEAT_SECONDS"):
                _beat(self.attempt_id, AttemptStatus.RUNNING)
                self.last = time.monotonic()
        except DB_ERRORS:  # a database blip: the step goes on; its end is recorded when it is back
            with contextlib.suppress(Exception):
                connection.close()
        return True

    def started(self, pgid: int) -> None:
        RunAttempt.objects.filter(id=self.attempt_id, status=AttemptStatus.RUNNING).update(pgid=pgid)


def _finish_in_workspace(
    attempt: RunAttempt, workspace, log_path: Path, code: int, ok: bool, keeper, db: _Database, failed: str = ""
) -> str:
    """The agent ended on its own: its worktree's changes are committed and checked before the run ends."""
    error = "" if ok else (failed or f"exit code {code}")
    escalation = None
    try:
        with _beating(attempt.id):
            outcome = workspaces.conclude(attempt, workspace, log_path, agent_ok=ok, tick=keeper)
    except Exception as exc:  # noqa: BLE001 - git failing is the attempt's failure, said plainly
        log.exception("attempt %s: workspace step failed", attempt.id)
        outcome = workspaces.Outcome(ok=False, error=f"workspace: {exc}")
    if ok and not outcome.ok:
        ok, error = False, outcome.error
    if outcome.escalation:
        escalation = (Escalation.Kind.SCOPE, f"run '{attempt.run.key}' {outcome.escalation}")
    _finish(
        db,
        attempt,
        status=AttemptStatus.SUCCEEDED if ok else AttemptStatus.FAILED,
        exit_code=code,
        error=error,
        escalation=escalation,
    )
    return f"exit {code}" + (f"; {error}" if error and code in attempt.run.agent_type.exit_codes else "")


def _supervise(attempt: RunAttempt, process, log_path: Path, workspace=None, keeper=None, db=None) -> str:
    run = attempt.run
    db = db or _Database(attempt.id, since=time.time())
    started = time.monotonic()
    last_beat = last_output = started
    last_size = -1
    poll = conf("POLL_SECONDS")
    fence = fence_seconds()
    lease_file = log_path if process.pgid else None  # a model agent is a thread here: no launcher to fence it
    while True:
        code = process.wait(poll)
        if code is not None:
            # What the agent left running in the background goes with it.
            process.stop(conf("KILL_GRACE_SECONDS"))
            if fenced := was_fenced(log_path):
                # Its launcher stopped it: this worker's heartbeat had not reached the database for
                # longer than the fence time. Another attempt may be running by now; this one is lost.
                _finish(db, attempt, status=AttemptStatus.LOST, error=f"worker {HOST}:{os.getpid()} {fenced}")
                return fenced
            ok = code in run.agent_type.exit_codes
            # An agent that exits 0 though its own output says it gave up (aider after an API error).
            reported = ok and _reported_error(run.agent_type, log_path)
            ok = ok and not reported
            if not ok and (limited := _rate_limited(run.agent_type, process, code, log_path, exit_says=not reported)):
                _finish(
                    db,
                    attempt,
                    status=AttemptStatus.RATE_LIMITED,
                    exit_code=code,
                    error=limited[0],
                    retry_after=limited[1],
                )
                return f"rate limited: {limited[0]}"
            failed = f"exit code {code}" + (", but its output reports an error" if reported else "")
            if workspace:
                return _finish_in_workspace(attempt, workspace, log_path, code, ok, keeper, db, failed=failed)
            _finish(
                db,
                attempt,
                status=AttemptStatus.SUCCEEDED if ok else AttemptStatus.FAILED,
                exit_code=code,
                error="" if ok else (getattr(process, "error", "") or failed),
            )
            return f"exit {code}"
        now = time.monotonic()
        if now - started > run.timeout:
            code = process.stop(conf("KILL_GRACE_SECONDS"))
            _finish(
                db,
                attempt,
                status=AttemptStatus.TIMED_OUT,
                exit_code=code,
                error=f"timed out after {run.timeout} s; "
                + ("process group stopped" if process.pgid else "stream closed"),
            )
            return "timed out"
        if db.silent() > fence:
            # The same fence as the launcher's, for an agent with no launcher (a model call).
            process.stop(conf("KILL_GRACE_SECONDS"))
            silent = db.silent()
            _finish(
                db,
                attempt,
                status=AttemptStatus.LOST,
                error=f"worker {HOST}:{os.getpid()} fenced: no heartbeat for {silent:.1f} s (fence {fence:g} s)",
            )
            return "fenced"
        if not db.call(_still, attempt.id, AttemptStatus.RUNNING, default=True):
            # Cancelled, or reaped as lost while we stalled: stop, mask what it printed, say nothing more.
            process.stop(conf("KILL_GRACE_SECONDS"))
            secrets = redaction.secret_values(run.agent_type)
            for path in attempt_paths(attempt)[:2]:
                redaction.rewrite_file(path, secrets)
            db.call(usage.record_attempt_end, attempt, log_path=log_path, secrets=secrets, stopped=True)
            db.call(logstore.store_attempt, attempt, secrets, log_path)
            db.call(logstore.forget_live, attempt.id)
            return "stopped: attempt no longer current"
        if now - last_beat >= conf("HEARTBEAT_SECONDS") or db.away_since is not None:
            db.beat(lease_file)
            last_beat = now
        if now - last_output >= conf("OUTPUT_SECONDS") and db.away_since is None:
            last_output = now
            last_size = db.call(_publish_output, attempt, log_path, last_size, default=last_size)


def _reported_error(agent_type, log_path: Path) -> bool:
    """The agent's own output says it ended on an error, for a CLI that exits 0 all the same."""
    if agent_type.is_model or agent_type.output_format not in agent_output.EXIT_ZERO_ON_ERROR:
        return False
    found = final_message.parsed_log(agent_type.output_format, log_path)
    return bool(found and found.is_error)


def _rate_limited(
    agent_type, process, code: int, log_path: Path, *, exit_says: bool = True
) -> tuple[str, float | None] | None:
    """(why, advised seconds) when the attempt ended on a rate limit: a model call's HTTP 429, or a CLI's
    rate-limit exit code or output as its agent type configures them; None otherwise. `exit_says`
    False: the exit code says nothing (0 from an agent whose output reports the error)."""
    if getattr(process, "rate_limited", False):
        return process.error or "rate limited", process.retry_after
    if agent_type.is_model or not (agent_type.rate_limit_pattern or agent_type.rate_limit_exit_codes):
        return None
    tail = redaction.read_tail(log_path, 8192, [])
    if not ratelimit.cli_rate_limited(
        exit_code=code if exit_says else None,
        output_tail=tail,
        pattern=agent_type.rate_limit_pattern,
        exit_codes=agent_type.rate_limit_exit_codes or [],
    ):
        return None
    advised = ratelimit.advised_in_text(tail)
    return f"rate limited: exit code {code}" + (f", retry after {advised:g} s" if advised is not None else ""), advised


def _publish_output(attempt: RunAttempt, log_path: Path, last_size: int) -> int:
    """Throttled: the tail goes to the database and one event says output grew."""
    try:
        size = log_path.stat().st_size
    except FileNotFoundError:
        return last_size
    if size == last_size:
        return size
    secrets = redaction.secret_values(attempt.run.agent_type)
    logstore.publish_live(attempt, log_path, secrets)  # several machines: the new output, for every web server
    tail = redaction.read_tail(log_path, conf("TAIL_BYTES"), secrets)
    with transaction.atomic():
        updated = AgentRun.objects.filter(id=attempt.run_id, attempt=attempt.number, status=RunStatus.RUNNING).update(
            output_tail=tail
        )
        if updated:
            events.record(
                batch_id=attempt.run.batch_id,
                run_id=attempt.run_id,
                attempt=attempt.number,
                kind=EventKind.RUN_OUTPUT,
                data={"bytes": size},
            )
    return size
