"""Set up what examples/parallel-coding.yaml needs: the throwaway repository var/demo-repo and
the `coding-demo` agent type (examples/agents/coding_agent.py, a scripted agent, no AI tool)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from spawner.models import AgentType

AGENT_TYPE = "coding-demo"


def agent_path() -> Path:
    return settings.BASE_DIR / "examples" / "agents" / "coding_agent.py"


def install_agent_type() -> tuple[AgentType, bool]:
    """The demo agent type, created if missing; an admin's changes to it are kept unless its script
    is gone (the checkout moved), in which case its argv is pointed at this checkout's script."""
    argv = ["python3", str(agent_path())]
    agent_type, created = AgentType.objects.get_or_create(
        name=AGENT_TYPE,
        defaults={
            "description": "Scripted coding agent for the examples: edits files as its prompt says (no AI)",
            "argv": argv,
            "prompt_via": "stdin",
            "default_timeout": 300,
        },
    )
    script = Path(agent_type.argv[-1]) if agent_type.argv else None
    if not created and (script is None or (script.name == agent_path().name and not script.exists())):
        agent_type.argv = argv
        agent_type.save(update_fields=["argv"])
    return agent_type, created


class Command(BaseCommand):
    help = "Create var/demo-repo (if missing) and the coding-demo agent type for examples/parallel-coding.yaml."

    def add_arguments(self, parser):
        parser.add_argument("--reset", action="store_true", help="delete the demo repository and create it again")
        parser.add_argument("--repo", type=Path, help="where to create it (default var/demo-repo in the project)")

    def handle(self, *args, **opts):
        agent_type, created = install_agent_type()
        self.stdout.write(f"agent type {agent_type.name}: {'created' if created else 'present'}")
        argv = [sys.executable, str(settings.BASE_DIR / "examples" / "agents" / "demo_repo.py")]
        if opts["repo"]:
            argv.append(str(opts["repo"]))
        if opts["reset"]:
            argv.append("--reset")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise CommandError((done.stderr or done.stdout).strip() or f"demo_repo.py exited {done.returncode}")
        self.stdout.write(done.stdout.strip())
