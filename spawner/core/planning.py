"""Pure planning: waves, cycles, file-scope conflicts, critical path, estimated speedup.

Everything here takes plain data and returns plain data; nothing touches the database.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import lru_cache
from itertools import chain, islice

from spawner.core.words import plural

Graph = Mapping[str, Sequence[str]]  # task key -> keys it depends on


def find_cycle(deps: Graph) -> list[str] | None:
    """Return one dependency cycle as [a, b, ..., a], or None."""
    # Iterative: a chain of a thousand tasks must not hit Python's recursion limit.
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(deps, white)
    for root in deps:
        if colour[root] != white:
            continue
        colour[root] = grey
        path, pending = [root], [iter(deps[root])]
        while pending:
            dep = next(pending[-1], None)
            if dep is None:
                colour[path.pop()] = black
                pending.pop()
            elif colour.get(dep) == grey:
                return path[path.index(dep) :] + [dep]
            elif colour.get(dep) == white:
                colour[dep] = grey
                path.append(dep)
                pending.append(iter(deps[dep]))
    return None


def dependencies_first(deps: Graph) -> list[str]:
    """Every task after all of its dependencies (the graph must have no cycle)."""
    order: list[str] = []
    seen: set[str] = set()
    for root in deps:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(deps[root]))]
        while stack:
            node, pending = stack[-1]
            dep = next((d for d in pending if d not in seen), None)
            if dep is None:
                stack.pop()
                order.append(node)
            else:
                seen.add(dep)
                stack.append((dep, iter(deps[dep])))
    return order


def waves(deps: Graph) -> list[list[str]]:
    """Topological levels: wave 0 has no dependencies, wave n depends on wave n-1 at most."""
    level: dict[str, int] = {}
    for node in dependencies_first(deps):
        level[node] = 1 + max((level[d] for d in deps[node]), default=-1)
    result: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for node in deps:  # keeps the spec's order inside a wave
        result[level[node]].append(node)
    return result


def ancestors(deps: Graph) -> dict[str, frozenset[str]]:
    """Every task's transitive dependencies."""
    memo: dict[str, frozenset[str]] = {}
    for node in dependencies_first(deps):
        memo[node] = frozenset(deps[node]).union(*(memo[d] for d in deps[node]))
    return {node: memo[node] for node in deps}


def critical_path(deps: Graph, durations: Mapping[str, float]) -> tuple[float, list[str]]:
    """The longest chain of dependent tasks, by duration: (its length, its keys in order)."""
    finish: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for wave in waves(deps):
        for node in wave:
            before = max(deps[node], key=lambda d: finish[d], default=None)
            via[node] = before
            finish[node] = (finish[before] if before else 0.0) + durations.get(node, 0.0)
    if not finish:
        return 0.0, []
    end: str | None = max(finish, key=finish.__getitem__)
    length = finish[end]
    chain = []
    while end is not None:
        chain.append(end)
        end = via[end]
    return length, chain[::-1]


# --- file scopes ------------------------------------------------------------------


@lru_cache(maxsize=65_536)
def _segment_overlap(a: str, b: str) -> bool:
    """Can one path segment match both glob segments? (conservative: may say yes)."""
    if not _has_magic(a) and not _has_magic(b):
        return a == b
    if not _has_magic(a):
        return fnmatchcase(a, b)
    if not _has_magic(b):
        return fnmatchcase(b, a)
    pa, sa = _literal_ends(a)
    pb, sb = _literal_ends(b)
    return (pa.startswith(pb) or pb.startswith(pa)) and (sa.endswith(sb) or sb.endswith(sa))


_MAGIC = re.compile(r"[*?\[]")
# One wildcard: `*`, `?` or a whole bracket class such as `[xy]` or `[!]a]`.
_WILDCARD = re.compile(r"[*?]|\[!?\]?[^\]]*\]")


def _has_magic(s: str) -> bool:
    return bool(_MAGIC.search(s))


def _literal_ends(s: str) -> tuple[str, str]:
    parts = _WILDCARD.split(s)
    return parts[0], parts[-1] if len(parts) > 1 else ""


def glob_segments(pattern: str) -> tuple[str, ...]:
    """`./src//a/` -> ('src', 'a'): the path segments a pattern matches, one by one."""
    return tuple(p for p in pattern.strip("/").split("/") if p not in ("", "."))


def covers_below(segments: tuple[str, ...]) -> bool:
    """A pattern naming a directory (`docs`, `src/*`) covers everything below it; `*.md` does not."""
    return not segments or segments[-1] == "*" or not _has_magic(segments[-1])


def globs_overlap(a: str, b: str) -> bool:
    """Could some file path match both glob patterns? `**` matches any number of directories."""
    return _segments_overlap(glob_segments(a), glob_segments(b))


def _segments_overlap(sa: tuple[str, ...], sb: tuple[str, ...]) -> bool:
    # Filled from the ends backwards, without recursion: len(sa) x len(sb) steps at most, so a
    # pattern of many segments or many `**` costs time in proportion, never the stack.
    la, lb = len(sa), len(sb)
    below_a, below_b = covers_below(sa), covers_below(sb)
    nxt = [False] * (lb + 1)  # row i + 1
    for i in range(la, -1, -1):
        row = [False] * (lb + 1)
        for j in range(lb, -1, -1):
            if i == la and j == lb:
                row[j] = True
            elif i < la and sa[i] == "**":
                row[j] = nxt[j] or (j < lb and row[j + 1])
            elif j < lb and sb[j] == "**":
                row[j] = row[j + 1] or (i < la and nxt[j])
            elif i == la:
                row[j] = below_a
            elif j == lb:
                row[j] = below_b
            else:
                row[j] = nxt[j + 1] and _segment_overlap(sa[i], sb[j])
        nxt = row
    return nxt[0]


@dataclass(frozen=True)
class Conflict:
    first: str
    second: str
    pattern_first: str
    pattern_second: str

    def describe(self) -> str:
        overlap = (
            f"'{self.pattern_first}'"
            if self.pattern_first == self.pattern_second
            else f"'{self.pattern_first}' and '{self.pattern_second}'"
        )
        return f"tasks '{self.first}' and '{self.second}' may both touch {overlap} with no dependency between them"


# The work one scope check may do: a pattern looked at costs 3, a comparison of two patterns
# 20 plus (segments + 1) x (other's segments + 1); about a second on a busy machine. Patterns
# that start with a directory name are only compared with patterns under the same directory;
# patterns that start with a wildcard are compared with every other, and a plan with very
# many of those is refused rather than computed for minutes.
MAX_SCOPE_WORK = 3_000_000


# Conflicts named at most: past a few, the advice (add dependencies, narrow 'files') is the same.
MAX_CONFLICTS_SHOWN = 20


class TooManyScopes(ValueError):
    """The file scopes are too many, and too broad, to be compared in reasonable time."""


_TOO_MANY = (
    "too many 'files' patterns that start with a wildcard to compare them all; start them "
    "with a directory name (src/app/** rather than **/app/**) or declare fewer"
)


def _literal_prefix(segments: tuple[str, ...]) -> tuple[str, ...]:
    for n, segment in enumerate(segments):
        if _has_magic(segment):
            return segments[:n]
    return segments


def file_conflicts(
    deps: Graph,
    files: Mapping[str, Sequence[str]],
    *,
    limit: int | None = None,
    budget: int = MAX_SCOPE_WORK,
) -> list[Conflict]:
    """Pairs of tasks that may touch the same files and could run at the same time (at most `limit`).

    Two patterns can only overlap when the directory path one starts with (`src/app` of
    `src/app/*.py`) is a prefix of the other's, so each pattern is compared with those stored
    at its own directory and above it, not with every other. Raises TooManyScopes past `budget` (see MAX_SCOPE_WORK).
    """
    before = ancestors(deps)
    position = {key: n for n, key in enumerate(deps)}
    here: dict = {}  # a tree of directory names; the patterns stored at a directory are under ""
    placed = []
    for key in deps:
        for pattern in files.get(key) or ():
            segments = glob_segments(pattern)
            node, path = here, [here]
            for name in _literal_prefix(segments):
                node = node.setdefault("/" + name, {})
                path.append(node)
            own = node.setdefault("", [])
            placed.append((key, pattern, segments, path, len(own)))
            own.append((key, pattern, segments))
    found: dict[tuple[str, str], Conflict] = {}
    work = 0
    for key, pattern, segments, path, slot in placed:
        # Above its own directory, every pattern; at it, only those stored after it (each pair once).
        above = (entry for node in path[:-1] for entry in node.get("", ()))
        for other, other_pattern, other_segments in chain(above, islice(path[-1][""], slot + 1, None)):
            work += 3
            first, second = (key, other) if position[key] < position[other] else (other, key)
            if other == key or (first, second) in found or first in before[second] or second in before[first]:
                if work > budget:
                    raise TooManyScopes(_TOO_MANY)
                continue
            work += 20 + (len(segments) + 1) * (len(other_segments) + 1)
            if work > budget:
                raise TooManyScopes(_TOO_MANY)
            if _segments_overlap(segments, other_segments):
                pair = (pattern, other_pattern) if first == key else (other_pattern, pattern)
                found[(first, second)] = Conflict(first, second, *pair)
                if limit is not None and len(found) >= limit:
                    return sorted(found.values(), key=lambda c: (position[c.first], position[c.second]))
    return sorted(found.values(), key=lambda c: (position[c.first], position[c.second]))


# --- the plan ---------------------------------------------------------------------


@dataclass(frozen=True)
class PlanTask:
    key: str
    depends_on: tuple[str, ...] = ()
    priority: int = 1
    agent_type: str = ""
    files: tuple[str, ...] = ()
    dep_refs: tuple[str, ...] = ()  # what the prompt uses of its dependencies: "plan.summary"
    estimate: float | None = None  # seconds, declared or from past runs


@dataclass
class Plan:
    waves: list[list[str]]
    order: list[str]  # plan order: by wave, then priority, then spec order
    critical_path: list[str]
    critical_path_seconds: float
    sum_seconds: float
    estimated_wall_seconds: float
    estimated_speedup: float
    durations_known: bool
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (name, ok, detail)


def _referenced_task(path: str, keys: set[str]) -> str | None:
    """The task a `{{ deps.<path> }}` names: keys may hold dots, so the longest key that fits."""
    parts = path.split(".")
    return next((k for n in range(len(parts), 0, -1) if (k := ".".join(parts[:n])) in keys), None)


def plan_order(tasks: Sequence[PlanTask]) -> list[str]:
    deps = {t.key: t.depends_on for t in tasks}
    by_key = {t.key: t for t in tasks}
    position = {t.key: i for i, t in enumerate(tasks)}
    return [key for wave in waves(deps) for key in sorted(wave, key=lambda k: (by_key[k].priority, position[k]))]


def simulate_wall(tasks: Sequence[PlanTask], durations: Mapping[str, float], max_parallel: int) -> float:
    """List-schedule the tasks (ready first, P0 first) on max_parallel slots; return the makespan."""
    deps = {t.key: set(t.depends_on) for t in tasks}
    order = {key: i for i, key in enumerate(plan_order(tasks))}
    prio = {t.key: t.priority for t in tasks}
    done: set[str] = set()
    running: list[tuple[float, str]] = []
    now = 0.0
    pending = set(deps)
    while pending or running:
        ready = sorted((k for k in pending if deps[k] <= done), key=lambda k: (prio[k], order[k]))
        for key in ready[: max(0, max_parallel - len(running))]:
            pending.discard(key)
            running.append((now + durations.get(key, 0.0), key))
        running.sort()
        now, key = running.pop(0)
        done.add(key)
    return now


def make_plan(tasks: Sequence[PlanTask], *, max_parallel: int, sequential: bool, aggregation: str) -> Plan:
    """Assumes a validated task list (no cycle, no unknown dependency)."""
    deps = {t.key: t.depends_on for t in tasks}
    known = all(t.estimate is not None for t in tasks)
    durations = {t.key: (t.estimate if t.estimate is not None else 1.0) for t in tasks}
    cp_seconds, cp = critical_path(deps, durations)
    total = sum(durations.values())
    wall = simulate_wall(tasks, durations, 1 if sequential else max_parallel)
    return Plan(
        waves=waves(deps),
        order=plan_order(tasks),
        critical_path=cp,
        critical_path_seconds=cp_seconds,
        sum_seconds=total,
        estimated_wall_seconds=wall,
        estimated_speedup=(total / wall) if wall else 1.0,
        durations_known=known,
        checks=independence_checks(tasks, aggregation=aggregation),
    )


def independence_checks(tasks: Sequence[PlanTask], *, aggregation: str) -> list[tuple[str, bool, str]]:
    """The independence checks before a parallel dispatch: each (name, ok, detail)."""
    deps = {t.key: t.depends_on for t in tasks}
    before = ancestors(deps)
    keys = set(deps)
    hidden = []
    for t in tasks:
        for path in t.dep_refs:
            ref = _referenced_task(path, keys)
            if ref and ref not in before[t.key]:
                hidden.append(f"'{t.key}' uses the result of '{ref}' but does not depend on it")
    undeclared = [t.key for t in tasks if not t.files]
    try:
        conflicts = file_conflicts(deps, {t.key: t.files for t in tasks}, limit=MAX_CONFLICTS_SHOWN)
    except TooManyScopes as exc:
        conflicts, scope_detail = [None], str(exc)
    else:
        scope_detail = "; ".join(c.describe() for c in conflicts) or (
            f"no overlap among declared scopes ({plural(len(undeclared), 'task')} without files)"
            if undeclared
            else "every task declares its own files"
        )
        if len(conflicts) == MAX_CONFLICTS_SHOWN:
            scope_detail += "; and maybe more"
    return [
        ("no hidden dependency", not hidden, "; ".join(hidden) or "no task uses an undeclared result"),
        ("distinct file scopes", not conflicts, scope_detail),
        (
            "aggregation defined",
            bool(aggregation),
            f"results combined by '{aggregation}'" if aggregation else "no aggregation strategy set",
        ),
    ]
