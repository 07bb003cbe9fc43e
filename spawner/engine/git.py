"""Run git: always an argv (never a shell), bounded in time, errors that say what git said.

Git takes its own locks when several processes change one repository at once; a command that
meets another's lock, or another's half-made worktree, is tried again after a short pause rather
than failing the run.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

TIMEOUT_SECONDS = 120
LOCK_RETRIES = 8
# Commits Spawner makes are its own: no user hooks, no signing prompts, no editor, no pager.
_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_EDITOR": "true",
    "GIT_PAGER": "cat",
    "GIT_CONFIG_NOSYSTEM": "1",
    "LC_ALL": "C",
    # Reading commands (status, diff) must not refresh and rewrite the user's index, nor take its lock.
    "GIT_OPTIONAL_LOCKS": "0",
}
# No hooks, no signing, no file-system monitor (a command named in config): git runs nothing but git.
_OPTIONS = [
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "commit.gpgSign=false",
    "-c",
    "core.quotePath=false",
    "-c",
    "core.fsmonitor=false",
]


class GitError(RuntimeError):
    def __init__(self, args: list[str], code: int, stderr: str):
        self.code = code
        self.stderr = stderr.strip()
        super().__init__(f"git {' '.join(args[:3])} failed ({code}): {self.stderr[-500:] or 'no message'}")


def _locked(stderr: str) -> bool:
    """Another git process holds a lock, or is half-way through adding a worktree: git reads every
    worktree's admin directory (`.git/worktrees/<name>/`) and dies on one another `worktree add`
    has made but not yet filled ("failed to read .../commondir"). Both pass in milliseconds."""
    if ".lock" in stderr and ("File exists" in stderr or "Unable to create" in stderr):
        return True
    return "worktrees/" in stderr and ("failed to read" in stderr or "unable to read" in stderr)


def _command(args: tuple[str, ...]) -> str:
    """The git command's name among its arguments (`-c key=value` options come first)."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-c", "-C"):
            skip = True
        elif not arg.startswith("-"):
            return arg
    return ""


def run(
    repo: Path | str,
    *args: str,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = TIMEOUT_SECONDS,
    input: str | None = None,  # noqa: A002 - subprocess's name
) -> subprocess.CompletedProcess:
    argv = ["git", *_OPTIONS, *args]
    full_env = {**os.environ, **_ENV, **(env or {})}
    for attempt in range(LOCK_RETRIES + 1):
        try:
            done = subprocess.run(
                argv,
                cwd=repo,
                env=full_env,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            # Said like any failure of git (a run's error, a False for check=False), never a traceback.
            done = subprocess.CompletedProcess(argv, -9, "", f"git {_command(args)} timed out after {timeout:g} s")
            break
        if done.returncode == 0 or not _locked(done.stderr) or attempt == LOCK_RETRIES:
            break
        time.sleep(0.05 * (2**attempt) * (0.5 + random.random()))
    if check and done.returncode != 0:
        raise GitError(list(args), done.returncode, done.stderr)
    return done


def out(repo: Path | str, *args: str, **kwargs) -> str:
    return run(repo, *args, **kwargs).stdout.strip()
