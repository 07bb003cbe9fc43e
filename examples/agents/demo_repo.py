#!/usr/bin/env python3
"""Create the throwaway repository examples/parallel-coding.yaml edits: var/demo-repo.

    python3 examples/agents/demo_repo.py              # create it if missing (idempotent)
    python3 examples/agents/demo_repo.py --reset      # start over: delete it and create it again
    python3 examples/agents/demo_repo.py PATH         # somewhere else

A few files and one commit, with its own committer name so it works on a machine with no git
identity. Spawner's runs work on branches and worktrees of it (`spawner/<batch>/<key>`); its own
checkout stays as created. `--reset` deletes it only if it carries this script's marker.
Standard library only.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "var" / "demo-repo"
MARKER = "spawner.demo"  # a git config key: this repository is ours to delete
FILES = {
    "README.md": "# Demo app\n\nA tiny program that greets people.\n",
    "app/greeting.py": 'def greet(name):\n    return "Hello, " + name\n',
    "app/config.py": 'LANGUAGE = "en"\n',
    "app/main.py": 'from app.greeting import greet\n\nprint(greet("world"))\n',
    "docs/index.md": "# Documentation\n\nStart with the README.\n",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def is_demo(path: Path) -> bool:
    found = subprocess.run(["git", "config", "--get", MARKER], cwd=path, capture_output=True, text=True)
    return found.returncode == 0 and found.stdout.strip() == "true"


def create(path: Path = DEFAULT, *, reset: bool = False) -> str:
    if (path / ".git").exists():
        if not reset:
            return f"{path} exists ({git(path, 'rev-parse', '--short', 'HEAD')})"
        if not is_demo(path):
            raise SystemExit(f"{path} is not a repository this script made; not deleting it")
        for line in git(path, "worktree", "list", "--porcelain").splitlines()[1:]:
            if line.startswith("worktree "):  # worktrees Spawner left: they belong to the old repository
                shutil.rmtree(line.split(" ", 1)[1], ignore_errors=True)
        shutil.rmtree(path)
    elif path.exists() and any(path.iterdir()):
        raise SystemExit(f"{path} exists and is not empty; choose another path")
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Spawner demo")
    git(path, "config", "user.email", "demo@spawner.invalid")
    git(path, "config", MARKER, "true")
    for name, text in FILES.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "Demo app: greeting, config, docs")
    return f"created {path} ({git(path, 'rev-parse', '--short', 'HEAD')})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", nargs="?", type=Path, default=DEFAULT)
    p.add_argument("--reset", action="store_true", help="delete it (if this script made it) and create it again")
    args = p.parse_args()
    print(create(args.path.resolve(), reset=args.reset))


if __name__ == "__main__":
    sys.exit(main())
