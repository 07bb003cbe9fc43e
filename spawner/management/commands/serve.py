"""`manage.py serve`: the web server (daphne) and the workers (spawner_cluster) together."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run daphne and a spawner cluster as child processes; Ctrl-C stops both cleanly."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-cluster", action="store_true", help="web server only")

    def handle(self, *args, **opts):
        self.first_admin()
        manage = str(settings.BASE_DIR / "manage.py")
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    # daphne with backpressure on response bodies: big downloads stay small in memory.
                    "spawner.webserver",
                    "-b",
                    opts["bind"],
                    "-p",
                    str(opts["port"]),
                    "spawner.asgi:application",
                ],
                cwd=settings.BASE_DIR,
            ),
        ]
        if not opts["no_cluster"]:
            children.append(subprocess.Popen([sys.executable, manage, "spawner_cluster"]))
        self.stdout.write(f"Spawner on http://{opts['bind']}:{opts['port']}/  (Ctrl-C stops it)")
        stop = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, _frame: stop.append(signum))
        while not stop and all(c.poll() is None for c in children):
            time.sleep(0.2)
        self.shut_down(children, stop)
        failed = [c for c in children if c.returncode not in (0, -signal.SIGTERM, -signal.SIGINT, None)]
        if failed and not stop:
            self.stderr.write(f"a child process exited with {failed[0].returncode}; stopped the rest")
            sys.exit(1)

    def shut_down(self, children: list[subprocess.Popen], signals: list[int]) -> None:
        """SIGTERM every child, whatever signal came: daphne started with SIGINT ignored (as from a
        script) ignores a SIGINT for good. The cluster drains its running agents; a second signal
        here is passed on, and it hands the rest back at once."""
        for child in children:
            if child.poll() is None:
                child.terminate()
        passed_on = len(signals)
        limit = settings.SPAWNER["DRAIN_SECONDS"] + settings.SPAWNER["KILL_GRACE_SECONDS"] + 30
        deadline = time.monotonic() + limit
        while any(c.poll() is None for c in children) and time.monotonic() < deadline:
            if len(signals) > passed_on:
                passed_on = len(signals)
                for child in children:
                    if child.poll() is None:
                        child.terminate()
            time.sleep(0.1)
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    def first_admin(self) -> None:
        """On a fresh database, create an admin with a generated password and print it once."""
        users = get_user_model()
        if users.objects.exists():
            return
        password = secrets.token_urlsafe(12)
        users.objects.create_superuser("admin", "", password)
        self.stdout.write(
            self.style.SUCCESS(f"First start: sign in as  admin / {password}  (shown once; change it in /admin/)")
        )
