"""`manage.py spawn FILE`: validate, plan, launch and follow a batch from the terminal."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from spawner import remote, selectors, services, spec
from spawner.core import template_names
from spawner.core.words import plural
from spawner.engine import cluster, reaper
from spawner.models import Batch
from spawner.states import BATCH_TERMINAL, RUN_TERMINAL, BatchStatus

STATUS_STYLE = {
    "pending": "dim",
    "queued": "cyan",
    "running": "bold blue",
    "succeeded": "green",
    "failed": "red",
    "timed_out": "red",
    "lost": "magenta",
    "cancelled": "yellow",
    "skipped": "dim",
    "partial": "yellow",
}


MERGE_WAIT_SECONDS = 300  # how long `--wait` waits for the merge queue after the batch ends


class Command(BaseCommand):
    help = "Launch a batch from a YAML/JSON spec and follow it live."

    def add_arguments(self, parser):
        parser.add_argument("file", nargs="?", help="batch spec (YAML or JSON); '-' reads standard input")
        parser.add_argument("--plan", action="store_true", help="show the plan; run nothing")
        parser.add_argument("--wait", action="store_true", help="follow the batch until it ends")
        parser.add_argument("--sequential", action="store_true", help="one task at a time")
        parser.add_argument("--compare", action="store_true", help="then run it sequentially and compare")
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")
        parser.add_argument(
            "--confirm-cost",
            action="store_true",
            help="launch even when the plan needs a confirmation (estimate above SPAWNER_CONFIRM_COST_USD, "
            "or many paid runs of unknown cost)",
        )
        parser.add_argument(
            "--server",
            metavar="URL",
            help="run it on another Spawner through its REST API (token: SPAWNER_TOKEN or the config file); follows it",
        )
        parser.add_argument(
            "--template", metavar="NAME", help="launch a saved template (OWNER/NAME: someone's own) instead of a file"
        )
        parser.add_argument(
            "--var", action="append", default=[], metavar="NAME=VALUE", help="a template variable (repeatable)"
        )

    def handle(self, *args, **opts):
        self.console = Console(stderr=opts["json"], highlight=False, width=console_width(opts["json"]))
        if opts["server"] and opts["template"] and (opts["plan"] or opts["compare"] or opts["sequential"]):
            raise CommandError("--template with --server launches it as saved: no --plan, --compare or --sequential")
        if opts["server"]:
            return self._remote(opts)
        if pending := unapplied_migrations():
            raise CommandError(
                f"the database is not set up ({plural(pending, 'migration')} to apply): "
                "run `python manage.py migrate` first"
            )
        path = opts["file"]
        template = self._template(opts) if opts["template"] else None
        if template is None and not path:
            raise CommandError("give a spec file (or --template NAME)")
        if template is not None:
            path, text, base_dir = f"template {template.name}", "", Path(settings.SPAWNER_WORKDIR)
        else:
            text = sys.stdin.read() if path == "-" else self._read(path)
            # Relative paths start from the base directory (the browser's, for a file inside it), else the file's.
            base_dir = Path.cwd() if path == "-" else services.spec_base_dir(Path(path))
        try:
            if template is not None:
                text = services.template_render(
                    spec_text=template.spec_text, declared=template.variables, given=self._vars(opts["var"])
                )
            batch_spec = services.spec_load(text, is_admin=True)
            checked = None if opts["plan"] else services.batch_check(batch_spec, base_dir)
        except spec.SpecInvalid as exc:
            for error in exc.errors:
                # The error quotes the spec, which may hold anything, brackets included: no markup.
                self.console.print(Text.assemble(("error", "red"), " ", str(error)), soft_wrap=True)
            raise CommandError(f"{path}: {plural(len(exc.errors), 'error')}; nothing was launched") from None
        if opts["plan"]:
            self._print_plan(batch_spec, sequential=opts["sequential"], base_dir=base_dir)
            return
        cost = selectors.plan_cost(batch_spec)
        if cost["needs_confirm"] and not opts["confirm_cost"]:
            raise CommandError(f"{cost['confirm_reason']}: add --confirm-cost to launch it; nothing was launched")
        if not reaper.live_clusters():
            self.console.print("[dim]no cluster is running: starting one for this batch[/dim]")
        began = time.monotonic()
        try:
            started = cluster.ensure_cluster()
        except cluster.ClusterStartFailed as exc:
            raise CommandError(str(exc)) from None
        if started:  # the batch launches on a ready cluster: the start-up is not in its wall time
            self.console.print(f"[dim]cluster ready in {time.monotonic() - began:.1f} s (not in its wall)[/dim]")
        try:
            batch = services.batch_launch(
                batch_spec=batch_spec,
                base_dir=base_dir,
                mode="sequential" if opts["sequential"] else None,
                checked=checked,
                template=template,
            )
            if not (opts["wait"] or opts["compare"] or started):
                self.console.print(f"launched batch #{batch.id}: {batch.name}")
                return
            batch = self._follow(batch)
            self._settle_merge_queue(batch)
            summaries = [selectors.batch_summary(batch)]
            if opts["compare"]:
                self.console.print("\n[bold]Same batch, sequentially:[/bold]")
                rerun = services.batch_rerun_sequential(batch=batch)
                summaries.append(selectors.batch_summary(self._follow(rerun)))
        finally:
            cluster.stop(started)
        for summary in summaries:
            summary["merge_queue"] = selectors.merge_queue(Batch.objects.get(id=summary["batch"]))
        self._report(opts, summaries)

    def _template(self, opts):
        """A saved template by name: a global one, or OWNER/NAME, or the only one so named."""
        from spawner.models import BatchTemplate

        owner, _, name = opts["template"].rpartition("/")
        rows = BatchTemplate.objects.filter(name=name).select_related("owner").order_by("id")
        rows = rows.filter(owner__username=owner) if owner else rows
        by_id = {t.id: t for t in rows}
        candidates = [template_names.Candidate(t.id, t.name, t.owner.username if t.owner else None) for t in rows]
        try:
            return by_id[template_names.pick(opts["template"], candidates).id]
        except template_names.NotOne as exc:
            raise CommandError(str(exc)) from None

    def _vars(self, pairs: list[str]) -> dict[str, str]:
        values = {}
        for pair in pairs:
            name, eq, value = pair.partition("=")
            if not eq or not name.strip():
                raise CommandError(f"--var {pair!r}: write NAME=VALUE")
            values[name.strip()] = value
        return values

    def _read(self, path: str) -> str:
        try:
            return Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {path}: {exc}") from None

    # --- on another server, through its REST API --------------------------------------

    def _remote(self, opts) -> None:
        try:
            token, _ = remote.token_for(opts["server"])
        except remote.RemoteError as exc:
            raise CommandError(exc.detail) from None
        if not token:
            raise CommandError(
                "--server needs a token: make one on the server's tokens page, then SPAWNER_TOKEN=spn_… or "
                f'[servers."{opts["server"].rstrip("/")}"] token = "spn_…" in {remote.config_path()} (chmod 600)'
            )
        path = opts["file"]
        if not opts["template"] and not path:
            raise CommandError("give a spec file (or --template NAME)")
        text = "" if opts["template"] else sys.stdin.read() if path == "-" else self._read(path)
        try:
            server = remote.Remote(opts["server"], token)
        except remote.RemoteError as exc:
            raise CommandError(exc.detail) from None
        try:
            if opts["plan"]:
                self._print_remote_plan(server.plan(text, sequential=opts["sequential"]))
                return
            if opts["template"]:
                batch = self._launch_remote_template(server, opts)
            else:
                batch = server.launch(text, sequential=opts["sequential"], confirm_cost=opts["confirm_cost"])
            self.console.print(f"launched batch #{batch['id']} on {server.server}: {escape(batch['name'])}")
            summaries = [self._follow_remote(server, batch)]
            compared = None
            if opts["compare"]:
                self.console.print("\n[bold]Same batch, sequentially:[/bold]")
                rerun = server.post(f"/batches/{batch['id']}/rerun-sequential")
                summaries.append(self._follow_remote(server, rerun))
                compared = server.get(f"/batches/{batch['id']}/compare")
        except remote.RemoteError as exc:
            for error in exc.errors:
                where, field = error.get("where", ""), error.get("field", "")
                line = f"{where}: {field + ': ' if field else ''}{error.get('message', '')}"
                self.console.print(Text.assemble(("error", "red"), " ", line), soft_wrap=True)
            nothing = "; nothing was launched" if exc.errors and "nothing was launched" not in exc.detail else ""
            detail = exc.detail.replace("send confirm_cost=true", "add --confirm-cost")
            raise CommandError(f"{server.server}: {detail}{nothing}") from None
        finally:
            server.close()
        self._report(opts, summaries, compared)

    def _launch_remote_template(self, server, opts) -> dict:
        """The server's template by name (the same rule as here), launched with --var values."""
        values = self._vars(opts["var"])
        name = opts["template"].rpartition("/")[2]
        listed = server.get("/templates", name=name)
        candidates = [template_names.Candidate(t["id"], t["name"], t["owner"]) for t in listed]
        try:
            chosen = template_names.pick(opts["template"], candidates)
        except template_names.NotOne as exc:
            raise CommandError(f"{server.server}: {exc}") from None
        params = {"confirm_cost": "true"} if opts["confirm_cost"] else {}
        return server.post(f"/templates/{chosen.id}/launch", {"variables": values}, params=params)

    def _report(self, opts, summaries: list[dict], compared: dict | None = None) -> None:
        """The end of a local or a remote run: JSON or the summary (and the comparison), and the exit code."""
        if opts["json"]:
            out = summaries[0] if len(summaries) == 1 else {"parallel": summaries[0], "sequential": summaries[1]}
            self.stdout.write(json.dumps(out, indent=2, default=str))
        else:
            self._print_summary(summaries[0])
            if len(summaries) == 2:
                self._print_comparison(*summaries, measured=compared)
        if summaries[0]["status"] != BatchStatus.SUCCEEDED:
            raise CommandError(f"batch #{summaries[0]['batch']} ended {summaries[0]['status']}")

    def _follow_remote(self, server, batch: dict) -> dict:
        with Live(self._remote_progress(batch), console=self.console, refresh_per_second=4) as live:
            done = server.follow(batch["id"], on_change=lambda detail: live.update(self._remote_progress(detail)))
            live.update(self._remote_progress(done))
        if not self.console.is_terminal:
            self.console.line()
        return done

    def _remote_progress(self, detail: dict) -> Group:
        runs = detail["runs"]
        table = Table(box=None, pad_edge=False)
        for col, justify in (("task", "left"), ("wave", "right"), ("status", "left"), ("try", "right")):
            table.add_column(col, justify=justify)
        for r in runs[:60]:
            style = STATUS_STYLE.get(r["status"], "")
            table.add_row(r["key"], str(r["wave"] + 1), f"[{style}]{r['status']}[/]", str(r["attempts"] or ""))
        if len(runs) > 60:
            table.add_row(f"… {len(runs) - 60} more", "", "", "")
        done = sum(1 for r in runs if r["status"] in RUN_TERMINAL)
        title = progress_title(detail["id"], detail["name"], done, len(runs), self.console.width)
        cost = detail.get("cost") or {}
        if cost.get("runs_with_usage") or cost.get("budget_usd") is not None:  # as a local run prints it
            return Group(title, spent_line(cost), table)
        return Group(title, table)

    def _print_remote_plan(self, plan: dict) -> None:
        c = self.console
        c.print(
            f"[bold]{escape(plan['name'])}[/bold]: {plan['tasks']} tasks, max_parallel {plan['max_parallel']}, "
            f"{plan['mode']}"
        )
        for n, wave in enumerate(plan["waves"], start=1):  # counted from 1, as the pages do
            c.print(f"  wave {n}: {', '.join(wave)}")
        unit = "s" if plan["durations_known"] else " units (no durations known: each task counts 1)"
        c.print(f"  critical path: {' -> '.join(plan['critical_path'])} ({plan['critical_path_seconds']:g}{unit})")
        c.print(
            f"  estimated: sum {plan['sum_seconds']:g}, wall {plan['estimated_wall_seconds']:g}, "
            f"speedup {plan['estimated_speedup']:.2f}x"
        )
        c.print(f"  estimated cost: {plan['cost']['label']}")
        if plan["cost"].get("needs_confirm"):
            reason = (
                plan["cost"].get("confirm_reason") or f"the estimated cost {plan['cost']['label']} needs a confirmation"
            )
            c.print(f"  [yellow]warn[/yellow] {escape(reason)}: launch with --confirm-cost")
        for check in plan["checks"]:
            mark = "[green]ok[/green]  " if check["ok"] else "[yellow]warn[/yellow]"
            c.print(f"  {mark} {check['name']}: {escape(check['detail'])}", soft_wrap=True)
        for warning in plan["warnings"]:
            c.print(f"  [yellow]warn[/yellow] {escape(warning)}", soft_wrap=True)

    # --- following --------------------------------------------------------------------

    def _follow(self, batch: Batch) -> Batch:
        with Live(self._progress(batch), console=self.console, refresh_per_second=8) as live:
            while True:
                batch.refresh_from_db()
                live.update(self._progress(batch))
                if batch.status in BATCH_TERMINAL:
                    break
                time.sleep(0.2)
        if not self.console.is_terminal:
            # Piped, the last frame is written without a line end: what follows starts a new line.
            self.console.line()
        return batch

    def _settle_merge_queue(self, batch: Batch, timeout: float = MERGE_WAIT_SECONDS) -> None:
        """A batch with a merge queue: wait (bounded) until no step is queued, so the summary
        shows what was merged and what conflicts, and the cluster started here is not stopped mid-merge."""
        deadline = time.monotonic() + timeout
        said = False
        while time.monotonic() < deadline:
            queue = selectors.merge_queue(batch)
            if queue is None or not any(step["state"] == "queued" for step in queue["steps"]):
                return
            if not said:
                self.console.print("[dim]merging the succeeded runs onto the integration branch…[/dim]")
                said = True
            time.sleep(0.2)
        self.console.print(f"[yellow]the merge queue still works after {timeout:.0f} s: see the dashboard[/yellow]")

    def _progress(self, batch: Batch) -> Group:
        runs = list(batch.runs.order_by("order").values_list("key", "status", "attempt", "wave", "usage", "cost_usd"))
        done = sum(1 for r in runs if r[1] in RUN_TERMINAL)
        cost = selectors.batch_cost(batch)
        costs = bool(cost["runs_with_usage"] or cost["budget_usd"] is not None)
        table = Table(box=None, pad_edge=False)
        table.add_column("task")
        table.add_column("wave", justify="right")
        table.add_column("status")
        table.add_column("try", justify="right")
        if costs:
            table.add_column("cost", justify="right")
        for key, status, attempt, wave, usage, run_cost in runs[:60]:
            style = STATUS_STYLE.get(status, "")
            cells = [key, str(wave + 1), f"[{style}]{status}[/]", str(attempt or "")]
            table.add_row(*cells, *([cost_cell(usage, run_cost)] if costs else []))
        if len(runs) > 60:
            table.add_row(f"… {len(runs) - 60} more", "", "", "", *([""] if costs else []))
        title = progress_title(batch.id, batch.name, done, len(runs), self.console.width)
        return Group(title, spent_line(cost), table) if costs else Group(title, table)

    # --- printing ---------------------------------------------------------------------

    def _print_plan(self, batch_spec: spec.BatchSpec, *, sequential: bool, base_dir: Path) -> None:
        plan = services.batch_plan(batch_spec, sequential=sequential or None)
        c = self.console
        mode = "sequential" if sequential else batch_spec.mode
        c.print(
            f"[bold]{escape(batch_spec.name)}[/bold]: {len(batch_spec.tasks)} tasks, "
            f"max_parallel {batch_spec.max_parallel}, {mode}"
        )
        for n, wave in enumerate(plan.waves, start=1):  # counted from 1, as the pages do
            c.print(f"  wave {n}: {', '.join(wave)}")
        unit = "s" if plan.durations_known else " units (no durations known: each task counts 1)"
        c.print(f"  critical path: {' -> '.join(plan.critical_path)} ({plan.critical_path_seconds:g}{unit})")
        c.print(
            f"  estimated: sum {plan.sum_seconds:g}, wall {plan.estimated_wall_seconds:g}, "
            f"speedup {plan.estimated_speedup:.2f}x"
        )
        cost = selectors.plan_cost(batch_spec)
        unknown = f" ({plural(len(cost['unknown']), 'task')} with no estimate)" if cost["unknown"] else ""
        budget = f" · budget {_usd(cost['budget_usd'])}" if cost["budget_usd"] is not None else ""
        c.print(f"  estimated cost: {cost['label']}{unknown}{budget}")
        if cost["over_budget"]:
            c.print("  [yellow]warn[/yellow] the estimate is over the batch's budget: some runs will be skipped")
        if cost["needs_confirm"]:
            c.print(f"  [yellow]warn[/yellow] {escape(cost['confirm_reason'])}: launch with --confirm-cost")
        for name, ok, detail in plan.checks:
            mark = "[green]ok[/green]  " if ok else "[yellow]warn[/yellow]"
            c.print(f"  {mark} {name}: {escape(detail)}", soft_wrap=True)
        # Before launch: what a launch would refuse (agent types this server cannot run, directories, workspace).
        for check in services.launch_checks(batch_spec, actor=None, base_dir=base_dir, confine=False):
            if check.name != "permission to launch":
                mark = "[green]ok[/green]  " if check.ok else "[red]no[/red]  "
                c.print(f"  {mark} {check.name}: {escape(check.detail)}", soft_wrap=True)
        workers = reaper.live_workers() or settings.SPAWNER_WORKERS
        if batch_spec.max_parallel > workers:
            c.print(
                f"  [yellow]warn[/yellow] max_parallel {batch_spec.max_parallel} is more than the "
                f"{workers} workers available: at most {workers} agents will run at once"
            )

    def _print_summary(self, s: dict) -> None:
        table = Table(title=Text(f"batch #{s['batch']} {s['name']}: {s['status']}"), title_justify="left")
        # Only the columns that say something for this batch: a narrow terminal keeps them readable.
        costs = any(r["usage"] for r in s["runs"])
        changes = any(r["changes"] for r in s["runs"])
        columns = ["task", "agent", "prio", "wave", "status", "tries", "exit", "seconds"]
        columns += ["tokens", "cost"] if costs else []
        columns += ["changes"] if changes else []
        for col in [*columns, "error"]:
            table.add_column(col, overflow="fold")
        for r in s["runs"]:
            secs = f"{r['duration_seconds']:.2f}" if r["duration_seconds"] is not None else ""
            cells = [
                r["key"],
                r["agent_type"],
                r["priority"],
                str(r["wave"] + 1),  # counted from 1, as the pages do (the JSON keeps the index)
                f"[{STATUS_STYLE.get(r['status'], '')}]{r['status']}[/]",
                str(r["attempts"]),
                "" if r["exit_code"] is None else str(r["exit_code"]),
                secs,
            ]
            if costs:
                cells += ["" if r["tokens"] is None else str(r["tokens"]), cost_cell(r["usage"], r["cost_usd"])]
            if changes:
                cells.append(changes_cell(r["changes"]))
            table.add_row(*cells, Text(r["error"][:60]))
        self.console.print(table)
        if queue := s.get("merge_queue"):
            self._print_merge_queue(queue)
        if s["cost"]["runs_with_usage"] or s["cost"]["budget_usd"] is not None:
            self.console.print(spent_line(s["cost"]))
        t = s["timings"]
        if agg := s.get("aggregation"):
            verdict = f" · verdict {agg['verdict']}" if agg.get("verdict") else ""
            summary = escape(str(agg["summary"]))
            self.console.print(f"[bold]{agg['strategy']}[/bold] ({escape(agg['status'] + verdict)}): {summary}")
            for note in agg.get("notes", []):
                self.console.print(Text(f"  {note['level']}: {note['message']}"), soft_wrap=True)
        if s.get("open_escalations"):
            self.console.print(f"[red]{plural(s['open_escalations'], 'open escalation')}[/red]: see the dashboard")
        parallelism = t.get("parallelism", t["speedup"])
        self.console.print(
            f"wall {_f(t['wall_seconds'])} s · work {_f(t['sum_seconds'])} s · critical path "
            f"{_f(t['critical_path_seconds'])} s · parallelism {_f(parallelism)}x (work ÷ wall) · "
            f"efficiency {_pct(t['efficiency'])}"
        )

    def _print_merge_queue(self, queue: dict) -> None:
        self.console.print(Text(f"merge queue ({queue['mode']}) onto {queue['integration_branch']}:", style="bold"))
        for step in queue["steps"]:
            line = f"  {step['position'] + 1}. {step['key']}: {step['state']}"
            if step["merge_commit"]:
                line += f" ({step['merge_commit'][:10]})"
            if step["conflict_files"]:
                line += f", conflicting files: {', '.join(step['conflict_files'][:5])}"
            if step["error"] and step["state"] != "merged":
                line += f" ({step['error'][:100]})"
            self.console.print(Text(line), soft_wrap=True)
        if any(step["state"] == "merged" for step in queue["steps"]):
            self.console.print(Text("take it (nothing was pushed, none of your branches changed):"))
            for command in selectors.integration_take_commands(Batch.objects.get(id=queue["batch"])):
                self.console.print(Text(f"  {command}"), soft_wrap=True)

    def _print_comparison(self, par: dict, seq: dict, measured: dict | None = None) -> None:
        """The compare page's definitions: each batch's own pass, one measured speedup. `measured`:
        the API's compare answer (remote); locally it is worked out here, the same way."""
        if measured is None:
            both = selectors.measured_comparison(Batch.objects.get(id=par["batch"]), Batch.objects.get(id=seq["batch"]))
            own = [{"wall_seconds": o["wall"], "work_seconds": o["work"]} for o in both["own"]]
            speedup = both["speedup"]
        else:
            own = [measured["parallel"]["own_pass"] or {}, measured["sequential"]["own_pass"] or {}]
            speedup = measured["measured_speedup"]
        table = Table(title="parallel vs sequential", title_justify="left")
        table.add_column("")
        table.add_column(f"parallel #{par['batch']}", justify="right")
        table.add_column(f"sequential #{seq['batch']}", justify="right")
        table.add_row("wall s (own pass)", _f(own[0].get("wall_seconds")), _f(own[1].get("wall_seconds")))
        table.add_row("work s", _f(own[0].get("work_seconds")), _f(own[1].get("work_seconds")))
        table.add_row("status", par["status"], seq["status"])
        self.console.print(table)
        if speedup:
            self.console.print(f"[bold]measured: {speedup_words(speedup)}[/bold] (sequential wall ÷ parallel wall)")


def comparison_words(parallel_wall: float, sequential_wall: float) -> str:
    """'parallel is 2.10x faster than sequential', or '1.05x slower' when it lost: never '0.95x faster'."""
    return speedup_words(sequential_wall / parallel_wall)


def speedup_words(ratio: float) -> str:
    """The measured speedup (sequential wall ÷ parallel wall) in words."""
    if ratio >= 1:
        return f"parallel is {ratio:.2f}x faster than sequential"
    return f"parallel is {1 / ratio:.2f}x slower than sequential"


def console_width(to_stderr: bool) -> int | None:
    """The terminal's width; into a file or a pipe (a CI log) 120 columns, or COLUMNS, not rich's 80
    that squeezes the results table."""
    stream = sys.stderr if to_stderr else sys.stdout
    if stream.isatty():
        return None
    try:
        return max(40, int(os.environ.get("COLUMNS", "")))
    except ValueError:
        return 120


def progress_title(batch_id: int, name: str, done: int, total: int, width: int) -> Text:
    """`batch #7 name [████░░░░] 3/8` on one line of `width`: the bar shrinks, then the name is cut."""
    count = f" {done}/{total}"
    head = f"batch #{batch_id} "
    bar_width = max(5, min(30, width - len(head) - len(name) - len(count) - 3))
    room_for_name = width - len(head) - bar_width - len(count) - 3
    if len(name) > room_for_name:
        name = name[: max(0, room_for_name - 1)] + "…"
    filled = int(bar_width * done / total) if total else bar_width
    line = f"{head}{name} [{'█' * filled}{'░' * (bar_width - filled)}]{count}"
    return Text(line if len(line) <= width else line[: max(0, width - 1)] + "…", no_wrap=True)


def cost_cell(usage: dict | None, cost: float | None) -> str:
    """A run's cost for the tables: $0.0400, "unknown" (the reason is in the JSON), or blank."""
    if not usage:
        return ""
    return _usd(cost) if cost is not None else "unknown"


def changes_cell(changes: dict | None) -> Text:
    """`+3 -1 in 2 files`, and the files outside the task's scope, for a run in a worktree."""
    if not changes:
        return Text("")
    if not changes["changed"]:
        return Text("no changes", style="dim")
    cell = Text(f"+{changes['added']} -{changes['removed']} in {plural(changes['changed'], 'file')}")
    if changes["outside_scope"]:
        cell.append(f"; outside its files: {', '.join(changes['outside_scope'][:3])}", style="yellow")
    return cell


def spent_line(cost: dict) -> Text:
    """`spent $0.80 / budget $1.00 (2 runs' cost unknown)`, printed live while the batch runs."""
    line = f"spent {_usd(cost['spent_usd'])}"
    if cost["budget_usd"] is not None:
        line += f" / budget {_usd(cost['budget_usd'])}"
    if cost["unknown_runs"]:
        line += f" ({plural(cost['unknown_runs'], 'run')} with cost unknown)"
    if cost["tokens"]:
        line += f" · {cost['tokens']} tokens"
    return Text(line, style="red" if cost["over"] else "")


def _usd(value) -> str:
    return selectors.usd(value)


def _f(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def _pct(value) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def unapplied_migrations() -> int:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    return len(executor.migration_plan(executor.loader.graph.leaf_nodes()))
