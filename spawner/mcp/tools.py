"""The MCP tools: plan_batch, launch_batch, batch_status, wait_batch, get_result, cancel, retry,
list_escalations.

Each acts as one person: over HTTP the owner of the API token the request carries (narrowed by its
scope, as in the REST API: `read` may read, `launch` may also plan (as `POST /api/batches/plan`),
launch, cancel and retry, `admin` may run admin-only agent types); over stdio the person
`manage.py spawner_mcp` was started for. The work is done by `spawner.services` (writes,
permission-checked) and `spawner.selectors` (reads) in a thread of their own, never in the event
loop; results are the REST API's shapes
(`spawner.api.batch_detail`, `selectors.plan_view`, `selectors.escalation_view`). A refusal, a bad
spec (every field error with its task, field and line) or a failure comes back as a tool error
that says what is wrong, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.serializers.json import DjangoJSONEncoder
from django.db import close_old_connections
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from spawner import permissions, selectors, services
from spawner.api import batch_detail
from spawner.errors import ActionRefused, NotAllowed, SpecInvalid
from spawner.models import AgentRun, Batch
from spawner.states import BATCH_TERMINAL, RUN_TERMINAL, Mode

log = logging.getLogger(__name__)

SERVER_NAME = "spawner"
INSTRUCTIONS = (
    "Spawner runs batches of agents and tools in parallel. Launch a batch from a spec (YAML or JSON: name, "
    "agent, tasks with key and prompt, and an optional aggregation such as merge) with launch_batch, then "
    "wait_batch until it ends: it returns the batch's summary and its combined (aggregated) result. "
    "plan_batch checks a spec without launching it; batch_status reads a batch at once; get_result reads "
    "the combined result; cancel and retry act on a batch or one of its runs; list_escalations shows what "
    "waits for a person."
)
SCOPES = ("read", "launch", "admin")
WAIT_POLL_SECONDS = 0.5
WAIT_DEFAULT_SECONDS = 600
WAIT_MAX_SECONDS = 3600
ESCALATIONS_MAX = 200

BatchId = Annotated[int, Field(ge=1, le=2**62, description="The batch's id, as launch_batch returned it.")]
RunKey = Annotated[
    str | None,
    Field(default=None, max_length=200, description="A run's task key; leave out to act on the whole batch."),
]
SpecArg = Annotated[
    str | dict[str, Any],
    Field(
        description="The batch spec `manage.py spawn` and the new-batch page take: YAML or JSON text, or the "
        "same as an object. E.g. {name: fan-out, agent: sh, aggregation: merge, tasks: [{key: a, prompt: "
        "'echo one'}, {key: b, prompt: 'echo two'}]}. Lines in field errors count in the text (an object is "
        "written out as YAML first)."
    ),
]


@dataclass(frozen=True)
class Identity:
    """Who the tools act as: the person (as their token's scope lets them act) and that scope."""

    user: Any
    scope: str
    username: str
    token_id: int | None = None  # the API token it came from, if any


def token_still_valid(token_id: int) -> bool:
    """A long-lived (stdio) server's token may be revoked, expire, or lose its person meanwhile."""
    from django.utils import timezone

    from spawner.models import ApiToken

    token = ApiToken.objects.select_related("user").filter(id=token_id).first()
    if token is None or token.revoked_at is not None or not token.user.is_active:
        return False
    return token.expires_at is None or token.expires_at > timezone.now()


def identity_from_token(secret: str) -> Identity | None:
    """The identity an API token stands for, or None (unknown, revoked, expired, its person inactive)."""
    found = services.token_user(secret)
    if found is None:
        return None
    user, token = found
    return Identity(permissions.token_acts_as(user, token.scope), token.scope, user.get_username(), token.id)


def identity_for_user(username: str) -> Identity:
    """The local operator acting as one of the server's people, with everything that person may do."""
    users = get_user_model()
    user = users.objects.filter(**{users.USERNAME_FIELD: username}).first()
    if user is None or not user.is_active:
        raise ActionRefused(f"no active user {username!r}")
    return Identity(user, "admin", user.get_username())


class Refused(Exception):
    """A tool's clear refusal: its message, and data the agent can act on."""

    def __init__(self, message: str, **data: Any):
        super().__init__(message)
        self.data = data


def _json_ready(data: Any) -> Any:
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder, ensure_ascii=False))


def _result(data: dict[str, Any], *, error: bool = False) -> CallToolResult:
    data = _json_ready(data)
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(data, indent=1, ensure_ascii=False))],
        structuredContent=data,
        isError=error,
    )


def _error(message: str, **data: Any) -> CallToolResult:
    return _result({"error": message, **data}, error=True)


def _in_thread(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Database work for async code: in Django's thread for sync work, with a usable connection."""

    def work(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        return fn(*args, **kwargs)

    return sync_to_async(work, thread_sensitive=True)


def _spec_text(spec: str | dict[str, Any]) -> str:
    if isinstance(spec, dict):
        return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)
    return spec


def _load(text: str, user):
    return services.spec_load(text, is_admin=permissions.may_run_admin_only(user))


def _batch(batch_id: int) -> Batch:
    found = Batch.objects.select_related("owner").filter(id=batch_id).first()
    if found is None:
        raise Refused(f"no batch #{batch_id}")
    return found


def _run(batch: Batch, key: str) -> AgentRun:
    found = AgentRun.objects.select_related("batch", "agent_type").filter(batch_id=batch.id, key=key).first()
    if found is None:
        raise Refused(f"batch #{batch.id} has no run {key!r}")
    return found


def _detail(batch: Batch) -> dict[str, Any]:
    return batch_detail(batch).to_dict()


def _progress(batch_id: int) -> tuple[str, int, int]:
    """(the batch's status, runs ended, runs in all)."""
    status = Batch.objects.filter(id=batch_id).values_list("status", flat=True).first()
    if status is None:
        raise Refused(f"no batch #{batch_id}")
    counts = selectors.batches_progress([batch_id])[batch_id]
    return status, sum(n for s, n in counts.items() if s in RUN_TERMINAL), sum(counts.values())


class _Tools:
    """The tools' work, in sync code (run in a thread by `_call`)."""

    def __init__(self, base_dir: Path | None, on_launch: Callable[[], str] | None):
        self.base_dir = base_dir
        self.on_launch = on_launch

    def plan(self, user, spec: str | dict[str, Any], sequential: bool) -> dict[str, Any]:
        batch_spec = _load(_spec_text(spec), user)
        plan = services.batch_plan(batch_spec, sequential=sequential or None)
        return selectors.plan_view(batch_spec, plan, sequential=sequential)

    def launch(
        self, user, spec: str | dict[str, Any], sequential: bool, confirm_cost: bool, key: str | None
    ) -> dict[str, Any]:
        from django.conf import settings

        permissions.require(user, permissions.may_launch)
        text = _spec_text(spec)
        batch_spec = _load(text, user)
        cost = selectors.plan_cost(batch_spec)
        if cost["needs_confirm"] and not confirm_cost:
            raise Refused(f"{cost['confirm_reason']}: call again with confirm_cost=true to launch it", cost=cost)
        note = self.on_launch() if self.on_launch else ""
        base_dir = self.base_dir or settings.SPAWNER_WORKDIR

        def launch() -> Batch:
            return services.batch_launch(
                batch_spec=batch_spec,
                base_dir=base_dir,
                owner=user,
                confine=True,
                mode=Mode.SEQUENTIAL if sequential else None,
            )

        if key is None:
            batch, again = launch(), False
        else:
            body = json.dumps({"spec": text, "sequential": sequential}, sort_keys=True).encode()
            batch, again = services.batch_launch_once(owner=user, key=key, body=body, launch=launch)
        out = {
            "batch_id": batch.id,
            "launched": not again,
            "next": f"wait_batch(batch_id={batch.id}) waits until it ends and returns its combined result",
            "batch": _detail(batch),
        }
        if note:
            out["cluster"] = note
        return out

    def status(self, user, batch_id: int) -> dict[str, Any]:
        return _detail(_batch(batch_id))

    def ended(self, user, batch_id: int, waited: float) -> dict[str, Any]:
        detail = _detail(_batch(batch_id))
        ended = detail["status"] in BATCH_TERMINAL
        return {
            "batch_id": batch_id,
            "ended": ended,
            "waited_seconds": round(waited, 3),
            "status": detail["status"],
            "succeeded": detail["succeeded"],
            "failed": detail["failed"],
            "result": detail["aggregation"],
            "summary": detail,
            **({} if ended else {"next": f"still {detail['status']}: call wait_batch(batch_id={batch_id}) again"}),
        }

    def result(self, user, batch_id: int, fmt: str) -> dict[str, Any]:
        batch = _batch(batch_id)
        data = selectors.aggregation_of(batch)
        if data is None:
            raise Refused(
                f"batch #{batch_id} has no combined result yet (it is computed when the batch ends; it is "
                f"{batch.status})",
                status=batch.status,
            )
        if fmt == "markdown":
            title = f"Batch #{batch.id} {batch.name}: combined result"
            return {"batch_id": batch_id, "markdown": selectors.result_markdown(data, title=title)}
        return {"batch_id": batch_id, "result": data}

    def cancel(self, user, batch_id: int, run_key: str | None) -> dict[str, Any]:
        batch = _batch(batch_id)
        if run_key is None:
            services.batch_cancel(batch=batch, actor=user)
            return {"detail": f"cancelling batch #{batch.id}: running agents are being stopped"}
        services.run_cancel(run=_run(batch, run_key), actor=user)
        return {"detail": f"cancelled run '{run_key}' of batch #{batch.id}"}

    def retry(self, user, batch_id: int, run_key: str | None) -> dict[str, Any]:
        batch = _batch(batch_id)
        if run_key is None:
            retried, refused = services.batch_retry_failed(batch=batch, actor=user)
            return {"retried": retried, "not_retried": refused}
        run = _run(batch, run_key)
        services.run_retry(run=run, actor=user)
        return {"retried": [run.key], "not_retried": [], "detail": f"attempt {run.attempt + 1} is queued"}

    def escalations(self, user, state: str, batch_id: int | None, mine: bool, limit: int) -> dict[str, Any]:
        found = selectors.escalation_queue(show="mine" if mine else "all", batch=batch_id, user_id=user.id)
        if state != "all":
            found = found.filter(state=state)
        found = found.select_related("run", "assignee", "resolved_by")
        return {"count": found.count(), "items": [selectors.escalation_view(e) for e in found[:limit]]}


def _scope_refusal(identity: Identity, needs: str, what: str) -> str:
    if SCOPES.index(identity.scope) >= SCOPES.index(needs):
        return ""
    return f"this token's scope is {identity.scope}: it may not {what} (make a token with the {needs} scope)"


def build_server(
    *,
    identity: Identity | None = None,
    base_dir: Path | None = None,
    on_launch: Callable[[], str] | None = None,
    stateless_http: bool = False,
) -> FastMCP:
    """The MCP server. `identity`: who a stdio server acts as (over HTTP each request's token says);
    `base_dir`: where specs' `cwd` is relative to (default SPAWNER_WORKDIR, as for the REST API);
    `on_launch`: called before each launch (the stdio server starts a cluster there), says what it did."""
    server = FastMCP(
        SERVER_NAME,
        instructions=INSTRUCTIONS,
        stateless_http=stateless_http,
        # Host and Origin are checked in front of it (spawner.mcp.http), against ALLOWED_HOSTS.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    work = _Tools(base_dir, on_launch)

    async def who(ctx: Context) -> Identity | None:
        request = ctx.request_context.request
        if request is not None:  # HTTP: checked for this very request
            return request.scope.get("spawner.identity")
        token_id = identity.token_id if identity is not None else None
        if token_id is not None and not await _in_thread(token_still_valid)(token_id):
            return None
        return identity

    async def call(ctx: Context, needs: str, what: str, fn: Callable[..., dict[str, Any]], *args: Any):
        me = await who(ctx)
        if me is None:
            return _error("not authenticated: the API token is not valid (revoked, expired or unknown)")
        if refusal := _scope_refusal(me, needs, what):
            return _error(refusal, scope=me.scope)
        try:
            return _result(await _in_thread(fn)(me.user, *args))
        except SpecInvalid as exc:
            count = len(exc.errors)
            return _error(
                f"the spec cannot run: {count} error{'s' if count != 1 else ''}; nothing was launched",
                errors=[e.as_data() for e in exc.errors],
            )
        except Refused as exc:
            return _error(str(exc), **exc.data)
        except NotAllowed as exc:
            return _error(f"not allowed: {exc}")
        except ActionRefused as exc:
            return _error(str(exc))
        except Exception as exc:  # said plainly to the agent; the traceback goes to the server's log
            log.exception("MCP tool %s failed", fn.__name__)
            return _error(f"Spawner could not do this: {type(exc).__name__} (the server's log has the details)")

    read_only = ToolAnnotations(readOnlyHint=True, openWorldHint=False)

    @server.tool(annotations=read_only)
    async def plan_batch(
        spec: SpecArg,
        ctx: Context,
        sequential: Annotated[bool, Field(description="Plan it one task at a time.")] = False,
    ) -> CallToolResult:
        """Check and plan a batch spec without launching it: waves, critical path, estimated wall time and
        speedup, checks, cost. A bad spec gives every field error with its task, field and line. Needs a
        token of the launch scope, as POST /api/batches/plan does (a read token gets a tool error)."""
        return await call(ctx, "launch", "plan batches", work.plan, spec, sequential)

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=True))
    async def launch_batch(
        spec: SpecArg,
        ctx: Context,
        sequential: Annotated[bool, Field(description="One task at a time, whatever the spec's mode.")] = False,
        confirm_cost: Annotated[bool, Field(description="Launch even above the cost that needs confirming.")] = False,
        idempotency_key: Annotated[
            str | None,
            Field(
                max_length=services.IDEMPOTENCY_KEY_CHARS,
                description="Send the same key again (same spec) to get the first launch's batch back, "
                "never a second launch.",
            ),
        ] = None,
    ) -> CallToolResult:
        """Launch a batch of agents or tools in parallel from a spec; returns its id and runs at once. Then
        call wait_batch with the id to get its combined result."""
        return await call(ctx, "launch", "launch batches", work.launch, spec, sequential, confirm_cost, idempotency_key)

    @server.tool(annotations=read_only)
    async def batch_status(batch_id: BatchId, ctx: Context) -> CallToolResult:
        """A batch as it stands now: status, run counts, timings, cost, each run's status, result and
        output tail, and the combined result once it has ended."""
        return await call(ctx, "read", "read batches", work.status, batch_id)

    @server.tool(annotations=read_only)
    async def wait_batch(
        batch_id: BatchId,
        ctx: Context,
        timeout_seconds: Annotated[
            float, Field(ge=0, le=WAIT_MAX_SECONDS, description="Wait at most this long (seconds).")
        ] = WAIT_DEFAULT_SECONDS,
    ) -> CallToolResult:
        """Wait until the batch ends (or the timeout), sending progress notifications (runs ended / runs
        in all); returns whether it ended, the succeeded and failed runs, the combined (aggregated, e.g.
        merged) result as `result`, and the batch's summary."""
        if await who(ctx) is None:
            return await call(ctx, "read", "read batches", work.ended, batch_id, 0.0)
        began = time.monotonic()
        deadline = began + timeout_seconds
        sent = -1
        while True:
            try:
                status, done, total = await _in_thread(_progress)(batch_id)
            except Refused as exc:
                return _error(str(exc))
            if done > sent:  # progress only ever grows (a retried run may end twice)
                sent = done
                await ctx.report_progress(done, total, f"{done} of {total} runs ended; the batch is {status}")
            if status in BATCH_TERMINAL or time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(WAIT_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        return await call(ctx, "read", "read batches", work.ended, batch_id, time.monotonic() - began)

    @server.tool(annotations=read_only)
    async def get_result(
        batch_id: BatchId,
        ctx: Context,
        format: Annotated[  # noqa: A002 - the tool's own word
            Literal["json", "markdown"], Field(description="json: the data; markdown: as the result page exports it.")
        ] = "json",
    ) -> CallToolResult:
        """The batch's combined result (its aggregation: merged findings, a vote, the winner of a race…),
        as the result page's export gives it; an error while the batch runs."""
        return await call(ctx, "read", "read batches", work.result, batch_id, format)

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, openWorldHint=False))
    async def cancel(batch_id: BatchId, ctx: Context, run_key: RunKey = None) -> CallToolResult:
        """Cancel a batch (its running agents are stopped) or one of its runs."""
        return await call(ctx, "launch", "cancel", work.cancel, batch_id, run_key)

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=True))
    async def retry(batch_id: BatchId, ctx: Context, run_key: RunKey = None) -> CallToolResult:
        """Retry one run of a batch, or every run of it that failed; the batch goes on running."""
        return await call(ctx, "launch", "retry", work.retry, batch_id, run_key)

    @server.tool(annotations=read_only)
    async def list_escalations(
        ctx: Context,
        state: Annotated[
            Literal["open", "resolved", "dismissed", "all"], Field(description="Which escalations.")
        ] = "open",
        batch_id: Annotated[int | None, Field(ge=1, le=2**62, description="Only this batch's.")] = None,
        mine: Annotated[bool, Field(description="Only those assigned to me.")] = False,
        limit: Annotated[int, Field(ge=1, le=ESCALATIONS_MAX)] = 50,
    ) -> CallToolResult:
        """What waits for a person: failed P0 runs, lost runs, votes without a majority, scope and merge
        conflicts, budgets reached; open ones first."""
        return await call(ctx, "read", "read escalations", work.escalations, state, batch_id, mine, limit)

    return server


__all__ = ["Identity", "build_server", "identity_for_user", "identity_from_token"]
