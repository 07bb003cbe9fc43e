"""The `workspace:` block of a batch: which git repository its coding agents change, and how.

```yaml
workspace:
  repo: .                 # a git repository, relative like cwd
  isolation: worktree     # worktree (the default with a workspace) | none (every run in the batch's cwd)
  base: main              # branch, tag or commit; default HEAD
  setup: "pip install -e ."   # run in each new worktree before the agent (admins only)
  gate: "pytest -q"       # the run succeeds only if this passes afterwards (admins only)
  merge: sequential       # none | sequential (the default with worktrees) | manual
  scope: warn             # an edit outside the task's `files`: warn | fail | escalate
  allow_dirty: false      # snapshot uncommitted changes into the checkpoint instead of refusing
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from spawner.spec.fields import Collector, as_choice, shown

ISOLATIONS = ("none", "worktree")
MERGES = ("none", "sequential", "manual")
SCOPES = ("warn", "fail", "escalate")
FIELDS = {"repo", "isolation", "base", "setup", "gate", "merge", "scope", "allow_dirty"}
MAX_REF_CHARS = 200
MAX_COMMAND_CHARS = 2000
# What git accepts as a revision a person types: no spaces, no option, no control characters.
REF_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./@{}^~:+-]*$")


@dataclass(frozen=True)
class WorkspaceSpec:
    repo: str = ""
    isolation: str = "none"
    base: str = "HEAD"
    setup: str = ""
    gate: str = ""
    merge: str = "none"
    scope: str = "warn"
    allow_dirty: bool = False

    @property
    def isolated(self) -> bool:
        return self.isolation == "worktree"


def read(c: Collector, value: Any, *, is_admin: bool, max_path_chars: int) -> WorkspaceSpec | None:
    """The workspace settings, every mistake named as `workspace.<field>`; None when absent."""
    if value is None:
        return None
    if not isinstance(value, dict):
        c.add("batch", "workspace", f"must be a mapping (repo, isolation, base, ...), got {shown(value)}")
        return None
    for extra in sorted(set(value) - FIELDS, key=str):
        c.add("batch", f"workspace.{extra}", f"unknown field (known: {', '.join(sorted(FIELDS))})")
    repo = value.get("repo", ".")
    if not isinstance(repo, str) or not repo or len(repo) > max_path_chars or "\x00" in repo:
        c.add("batch", "workspace.repo", f"must be a path of at most {max_path_chars} characters, got {shown(repo)}")
        repo = "."
    isolation = as_choice(c, "batch", "workspace.isolation", value.get("isolation", "worktree"), ISOLATIONS)
    base = value.get("base", "HEAD")
    if not isinstance(base, str) or len(base) > MAX_REF_CHARS or not REF_RE.match(base) or ".." in base:
        c.add("batch", "workspace.base", f"must be a branch, tag or commit name, got {shown(base)}")
        base = "HEAD"
    merge_default = "sequential" if isolation == "worktree" else "none"
    merge = as_choice(c, "batch", "workspace.merge", value.get("merge", merge_default), MERGES)
    scope = as_choice(c, "batch", "workspace.scope", value.get("scope", "warn"), SCOPES)
    commands = {}
    for name in ("setup", "gate"):
        command = value.get(name) or ""
        if not isinstance(command, str) or len(command) > MAX_COMMAND_CHARS or "\x00" in command:
            c.add("batch", f"workspace.{name}", f"must be a command of at most {MAX_COMMAND_CHARS} characters")
            command = ""
        elif command and not is_admin:
            # It runs as a shell command on the server: only admins say what the server runs.
            c.add(
                "batch",
                f"workspace.{name}",
                "may only be set by an admin (it runs as a command on the server)",
                admin_only=True,
            )
            command = ""
        commands[name] = command.strip()
    allow_dirty = value.get("allow_dirty", False)
    if not isinstance(allow_dirty, bool):
        c.add("batch", "workspace.allow_dirty", f"must be true or false, got {shown(allow_dirty)}")
        allow_dirty = False
    if isolation != "worktree" and (merge not in (None, "none") or commands["gate"] or commands["setup"]):
        c.add("batch", "workspace.isolation", "merge, setup and gate need isolation: worktree")
    return WorkspaceSpec(
        repo=repo,
        isolation=isolation or "worktree",
        base=base,
        setup=commands["setup"],
        gate=commands["gate"],
        merge=merge or merge_default,
        scope=scope or "warn",
        allow_dirty=allow_dirty,
    )
