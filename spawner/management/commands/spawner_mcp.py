"""Serve Spawner's MCP tools over stdio, for an agent started on this machine (Claude Code's
`--mcp-config`, an IDE): `manage.py spawner_mcp --user NAME`, or with a personal API token in
SPAWNER_TOKEN (its scope applies). No web server is needed: the first launch starts a cluster when
none is alive (as `spawn` does), and it is stopped when the agent closes the server."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import anyio
from django.core.management.base import BaseCommand, CommandError

from spawner.engine import cluster
from spawner.errors import ActionRefused
from spawner.mcp import tools


class Command(BaseCommand):
    help = "Spawner's MCP server over stdio, acting as --user NAME or as the API token in SPAWNER_TOKEN."

    def add_arguments(self, parser):
        parser.add_argument("--user", help="Act as this user (with everything they may do).")
        parser.add_argument(
            "--workdir",
            default=None,
            help="Where a spec's cwd is relative to (runs stay inside it). Default: the current directory.",
        )
        parser.add_argument(
            "--no-cluster",
            action="store_true",
            help="Never start a cluster: launched batches wait for one (`manage.py spawner_cluster`, `serve`).",
        )

    def handle(self, *args, **opts):
        identity = self._identity(opts["user"], os.environ.get("SPAWNER_TOKEN", "").strip())
        workdir = Path(opts["workdir"] or os.getcwd()).resolve()
        if not workdir.is_dir():
            raise CommandError(f"--workdir {workdir} is not a directory")
        keeper = _ClusterKeeper(enabled=not opts["no_cluster"])
        server = tools.build_server(identity=identity, base_dir=workdir, on_launch=keeper.ensure)
        print(f"spawner MCP server on stdio, acting as {identity.username} ({identity.scope})", file=sys.stderr)
        try:
            anyio.run(server.run_stdio_async)
        except KeyboardInterrupt:
            pass
        finally:
            keeper.stop()

    def _identity(self, username: str | None, token: str) -> tools.Identity:
        if username:
            try:
                return tools.identity_for_user(username)
            except ActionRefused as exc:
                raise CommandError(f"--user: {exc}") from None
        if token:
            found = tools.identity_from_token(token)
            if found is None:
                raise CommandError("SPAWNER_TOKEN is not a valid API token (unknown, revoked or expired)")
            return found
        raise CommandError(
            "say who the MCP tools act as: --user NAME, or a personal API token in SPAWNER_TOKEN "
            "(made on the tokens page)"
        )


class _ClusterKeeper:
    """Starts a cluster at a launch when none is alive, and stops the one it started at the end."""

    def __init__(self, *, enabled: bool):
        self.enabled = enabled
        self.started = None
        self.lock = threading.Lock()

    def ensure(self) -> str:
        with self.lock:
            if not self.enabled:
                return "" if cluster.alive() else "no cluster is running: the batch waits until one starts"
            if self.started is not None and self.started.poll() is None:
                return ""
            try:
                self.started = cluster.ensure_cluster()
            except cluster.ClusterStartFailed as exc:
                raise ActionRefused(str(exc)) from None
            return "started a cluster for this server (it stops when the server does)" if self.started else ""

    def stop(self) -> None:
        with self.lock:
            cluster.stop(self.started)
            self.started = None
