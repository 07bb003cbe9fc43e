"""What a coding agent changed, decided without touching git: branch names, the diff summary
read from `git diff --numstat -z`, and which changed files fall outside the task's `files`."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from spawner.core.planning import globs_overlap

INTEGRATION = "integration"
_UNSAFE = re.compile(r"\.\.|\.lock$|\.$|@\{")


def run_branch(batch_id: int, key: str) -> str:
    """`spawner/<batch>/<key>`; a key git would refuse in a ref name gets a safe, distinct form."""
    safe = _UNSAFE.sub("-", key)
    if safe != key or key == INTEGRATION:
        safe = f"{safe}-{hashlib.sha1(key.encode()).hexdigest()[:6]}"
    return f"spawner/{batch_id}/{safe}"


def integration_branch(batch_id: int) -> str:
    return f"spawner/{batch_id}/{INTEGRATION}"


def checkpoint_ref(batch_id: int) -> str:
    """Keeps the batch's checkpoint commit alive (a snapshot of a dirty checkout has no branch)."""
    return f"refs/spawner/{batch_id}/checkpoint"


def worktree_name(batch_id: int, key: str, attempt: int) -> str:
    """The directory of one attempt's worktree: unique, so concurrent `git worktree add` never collide."""
    return f"b{batch_id}-{key}-{attempt}"


@dataclass(frozen=True)
class FileChange:
    path: str
    added: int | None  # None: a binary file
    removed: int | None
    outside_scope: bool = False


@dataclass(frozen=True)
class Changes:
    """A run's diff summary, as stored with the run and shown on its page."""

    files: tuple[FileChange, ...] = ()
    base: str = ""
    head: str = ""
    truncated: bool = False  # more files changed than are listed
    outside: tuple[str, ...] = ()  # every changed file outside the task's files, listed or not
    # Totals over every changed file (the list may be cut); None: count the listed files.
    total: tuple[int, int, int] | None = None  # (files, lines added, lines removed)

    @property
    def added(self) -> int:
        return self.total[1] if self.total else sum(f.added or 0 for f in self.files)

    @property
    def removed(self) -> int:
        return self.total[2] if self.total else sum(f.removed or 0 for f in self.files)

    @property
    def changed(self) -> int:
        return self.total[0] if self.total else len(self.files)

    @property
    def outside_scope(self) -> list[str]:
        return list(self.outside)

    def as_data(self) -> dict:
        return {
            "base": self.base,
            "head": self.head,
            "files": [asdict(f) for f in self.files],
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "outside_scope": self.outside_scope,
            "truncated": self.truncated,
        }


def parse_numstat(text: str) -> list[tuple[str, int | None, int | None]]:
    """`git diff --numstat -z --no-renames` output -> [(path, added, removed)]; binary files count None."""
    found = []
    for record in text.split("\0"):
        if not record:
            continue
        parts = record.split("\t", 2)
        if len(parts) != 3:
            continue
        added, removed, path = parts
        found.append((path, _count(added), _count(removed)))
    return found


def _count(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _as_pattern(path: str) -> str:
    """A file path as a glob that matches only itself."""
    return re.sub(r"([*?\[])", r"[\1]", path)


def in_scope(path: str, patterns: Sequence[str]) -> bool:
    """Is a changed file covered by one of the task's `files` (no patterns: everything is)?"""
    if not patterns:
        return True
    literal = _as_pattern(path)
    return any(globs_overlap(literal, pattern) for pattern in patterns)


def summarise(
    numstat: Iterable[tuple[str, int | None, int | None]],
    patterns: Sequence[str],
    *,
    base: str = "",
    head: str = "",
    most: int = 1000,
) -> Changes:
    rows = list(numstat)
    # The scope is checked on every changed file: listing fewer must not let one slip through.
    outside = tuple(path for path, _, _ in rows if not in_scope(path, patterns))
    outside_set = set(outside)
    files = tuple(
        FileChange(path, added, removed, outside_scope=path in outside_set) for path, added, removed in rows[:most]
    )
    total = (len(rows), sum(a or 0 for _, a, _ in rows), sum(r or 0 for _, _, r in rows))
    return Changes(files=files, base=base, head=head, truncated=len(rows) > most, outside=outside, total=total)


@dataclass(frozen=True)
class ScopeVerdict:
    """What an edit outside the declared files does to the run, by the batch's `scope:` policy."""

    fail: bool = False
    escalate: bool = False
    message: str = ""
    paths: list[str] = field(default_factory=list)


def scope_verdict(changes: Changes, policy: str, most_named: int = 5) -> ScopeVerdict:
    outside = changes.outside_scope
    if not outside:
        return ScopeVerdict()
    named = ", ".join(outside[:most_named]) + (
        f" and {len(outside) - most_named} more" if len(outside) > most_named else ""
    )
    message = f"changed {len(outside)} file{'s' if len(outside) != 1 else ''} outside its files: {named}"
    return ScopeVerdict(fail=policy == "fail", escalate=policy == "escalate", message=message, paths=outside)
