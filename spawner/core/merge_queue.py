"""The merge queue's rules, decided without touching git: the order runs are merged in, what
`git merge-tree --write-tree --name-only -z` says, the conflict matrix, the hunks a person sees,
the prompt of a re-run on top of the integration branch, and the commands that take the result."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

# The states of a merge step (spawner.models.MergeStep.State has the same values).
QUEUED = "queued"  # waits its turn in the queue
WAITING = "waiting"  # manual mode: waits for a person to pick it
MERGED = "merged"
CONFLICT = "conflict"  # does not merge onto the integration branch; a person resolves it
RESOLVING = "resolving"  # a person resolves it by hand in the run's worktree
RERUNNING = "rerunning"  # its agent runs again on top of the integration branch
GATE_FAILED = "gate_failed"  # merged, but the gate failed on the result: the merge was undone
SKIPPED = "skipped"
REVERTED = "reverted"  # was merged; its merge was reverted (or the integration branch reset)

STATES = (QUEUED, WAITING, MERGED, CONFLICT, RESOLVING, RERUNNING, GATE_FAILED, SKIPPED, REVERTED)
# What a reset of the integration branch makes of each state (the others stay as they are).
AFTER_RESET = {MERGED: REVERTED, CONFLICT: REVERTED, GATE_FAILED: REVERTED}

SIDES = ("ours", "theirs")  # ours: the integration branch; theirs: the run's branch
MOST_HUNKS = 20
HUNK_CONTEXT = 3
HUNK_MAX_CHARS = 4000


@dataclass(frozen=True)
class QueueRun:
    key: str
    wave: int
    priority: int
    order: int


def queue_order(runs: Iterable[QueueRun]) -> list[str]:
    """Plan order: wave by wave, and within a wave the higher priority (P0) first, then plan position."""
    return [r.key for r in sorted(runs, key=lambda r: (r.wave, r.priority, r.order, r.key))]


def to_merge(strategy: str, succeeded: Sequence[str], winner: str | None) -> list[str]:
    """Which succeeded runs enter the queue: every one, or in a race (first_success) only its winner."""
    if strategy == "first_success":
        return [winner] if winner in succeeded else []
    return list(succeeded)


# --- git merge-tree ------------------------------------------------------------------------


@dataclass(frozen=True)
class MergeTree:
    """`git merge-tree --write-tree --name-only -z A B`: the merged tree (conflicted files hold
    their markers), the conflicting files and git's messages (type, text)."""

    tree: str
    files: tuple[str, ...] = ()
    messages: tuple[tuple[str, str], ...] = ()

    @property
    def clean(self) -> bool:
        return not self.files


def parse_merge_tree(output: str) -> MergeTree:
    parts = output.split("\0")
    tree = parts[0].strip()
    files: list[str] = []
    i = 1
    while i < len(parts) and parts[i] != "":
        if parts[i] not in files:
            files.append(parts[i])
        i += 1
    messages: list[tuple[str, str]] = []
    i += 1
    # Each message: <number of paths> NUL <paths> NUL ... <type> NUL <text> NUL
    while i < len(parts) and parts[i].isdigit():
        count = int(parts[i])
        i += 1 + count
        if i + 1 < len(parts):
            messages.append((parts[i], parts[i + 1].strip()))
        i += 2
    return MergeTree(tree=tree, files=tuple(files), messages=tuple(messages))


def conflict_kinds(result: MergeTree) -> dict[str, str]:
    """Each conflicting file's kind of conflict (contents, modify/delete, ...), from git's messages."""
    kinds: dict[str, str] = {}
    for kind, text in result.messages:
        match = re.match(r"CONFLICT \(([^)]+)\)", kind)
        if not match:
            continue
        for path in result.files:
            if path in text and path not in kinds:
                kinds[path] = match.group(1)
    return kinds


# --- hunks ---------------------------------------------------------------------------------

_START, _MIDDLE, _BASE, _END = "<<<<<<< ", "=======", "||||||| ", ">>>>>>> "


def conflict_hunks(text: str, *, context: int = HUNK_CONTEXT, most: int = MOST_HUNKS) -> list[dict]:
    """The conflicting regions of a file with git's markers, each with a few lines around it:
    [{"line": first line of the region (from 1), "ours": [...], "theirs": [...], "text": "..."}]."""
    lines = text.splitlines()
    hunks: list[dict] = []
    i = 0
    while i < len(lines) and len(hunks) < most:
        if not lines[i].startswith(_START):
            i += 1
            continue
        start, ours, theirs, side = i, [], [], "ours"
        i += 1
        while i < len(lines) and not lines[i].startswith(_END):
            line = lines[i]
            if line.startswith(_BASE):
                side = "base"
            elif line == _MIDDLE:
                side = "theirs"
            elif side == "ours":
                ours.append(line)
            elif side == "theirs":
                theirs.append(line)
            i += 1
        end = min(i, len(lines) - 1)
        shown = "\n".join(lines[max(0, start - context) : end + 1 + context])
        hunks.append({"line": start + 1, "ours": ours, "theirs": theirs, "text": shown[:HUNK_MAX_CHARS]})
        i += 1
    return hunks


def has_markers(text: str) -> bool:
    """Does a file still hold a conflict git marked (a line starting `<<<<<<< ` ... `>>>>>>> `)?"""
    starts = any(line.startswith(_START) for line in text.splitlines())
    return starts and any(line.startswith(_END) for line in text.splitlines())


# --- the conflict matrix -------------------------------------------------------------------


@dataclass
class Matrix:
    """Which pairs of runs conflict, on which files, and which runs conflict with the integration head."""

    runs: list[str] = field(default_factory=list)
    pairs: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    integration: dict[str, list[str]] = field(default_factory=dict)

    def as_data(self) -> dict:
        return {
            "runs": self.runs,
            "pairs": [{"a": a, "b": b, "files": files} for (a, b), files in self.pairs.items() if files],
            "integration": {k: v for k, v in self.integration.items() if v},
            "checked_pairs": len(self.pairs),
        }


def pairs_of(keys: Sequence[str]) -> list[tuple[str, str]]:
    """Every unordered pair, in queue order."""
    return list(combinations(keys, 2))


def partners(matrix_data: dict, key: str) -> list[dict]:
    """The runs `key` conflicts with, and on which files."""
    found = []
    for pair in matrix_data.get("pairs", []):
        if key in (pair["a"], pair["b"]):
            found.append({"run": pair["b"] if pair["a"] == key else pair["a"], "files": pair["files"]})
    return found


# --- resolutions ---------------------------------------------------------------------------


def side_choice_errors(conflict_files: Sequence[str], choices: dict) -> list[str]:
    """What is wrong with a person's choice of one side per conflicting file ([] when it is complete)."""
    errors = []
    missing = [f for f in conflict_files if f not in choices]
    if missing:
        errors.append(f"choose ours or theirs for: {', '.join(missing)}")
    unknown = [f for f in choices if f not in conflict_files]
    if unknown:
        errors.append(f"not a conflicting file: {', '.join(unknown)}")
    bad = sorted({str(v) for v in choices.values() if v not in SIDES})
    if bad:
        errors.append(f"a side is ours (the integration branch) or theirs (the run), not {', '.join(bad)}")
    return errors


def rerun_note(*, integration: str, conflict: dict, most_chars: int = 12000) -> str:
    """What is added to a run's prompt when it runs again on top of the integration branch."""
    what = "conflicted with" if conflict.get("files") else "failed the gate together with"
    lines = [
        "---",
        f"Your earlier change {what} work already merged into {integration}. You now start",
        "from that branch, which holds the other agents' work: make your change again on top of it,",
        "keeping their changes." + (" The conflicting files and regions were:" if conflict.get("files") else ""),
    ]
    for path, hunks in (conflict.get("hunks") or {}).items():
        lines.append(f"\n### {path}")
        for hunk in hunks:
            lines.append(f"(around line {hunk['line']}; ours = already merged, theirs = yours)")
            lines.append(hunk["text"])
    for path in conflict.get("files", []):
        if path not in (conflict.get("hunks") or {}):
            lines.append(f"\n### {path} ({conflict.get('kinds', {}).get(path, 'conflict')})")
    if conflict.get("gate"):
        lines.append(f"\nThe gate failed on the merged result:\n{conflict['gate']}")
    text = "\n".join(lines)
    return text if len(text) <= most_chars else text[:most_chars] + "\n[conflict cut]"


# What a person may do with a step in each state (the services refuse the rest).
ACTIONS: dict[str, tuple[str, ...]] = {
    QUEUED: ("skip",),
    WAITING: ("merge", "skip"),
    MERGED: ("revert",),
    CONFLICT: ("keep_sides", "rerun", "by_hand", "skip"),
    RESOLVING: ("resolved", "skip"),
    RERUNNING: (),
    GATE_FAILED: ("merge", "rerun", "skip"),
    SKIPPED: ("merge",),
    REVERTED: ("merge", "skip"),
}


def actions_for(state: str) -> tuple[str, ...]:
    return ACTIONS.get(state, ())


def take_commands(repo: str, branch: str) -> list[str]:
    """What a person types to take the integration branch into their own (nothing is pushed for them)."""
    cd = f"cd {shlex.quote(repo)}"
    return [
        f"{cd} && git log --oneline --graph HEAD..{branch}",
        f"{cd} && git diff HEAD...{branch}",
        f"{cd} && git merge {branch}",
    ]
