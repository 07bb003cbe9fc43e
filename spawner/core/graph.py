"""Pure layout of a batch's dependency graph: waves left to right, nodes ordered to cross few edges.

Waves come from `planning.waves`. Inside each wave the nodes are ordered by the barycentre
heuristic (each node placed at the mean position of its neighbours in the waves before or after,
a few sweeps, the order with the fewest crossings kept). Big graphs stay drawable: a wave with
more than `per_wave` nodes shows the most pressing ones and one "+N more" node for the rest, and
past `max_waves` waves only a window of them is drawn, the waves before and after each folded into
one node. Coordinates are in SVG user units; nothing here knows about HTML.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from spawner.core.planning import waves as plan_waves
from spawner.states import RUN_TERMINAL

Graph = Mapping[str, Sequence[str]]

NODE_W = 168
NODE_H = 42
GAP_X = 56
GAP_Y = 12
MARGIN = 8
HEAD = 22  # room for the wave headings above the columns

# A glyph per state, so that no state is told by colour alone.
GLYPHS = {
    "pending": "○",
    "queued": "◷",
    "running": "▶",
    "succeeded": "✓",
    "failed": "✗",
    "timed_out": "⧗",
    "lost": "?",
    "cancelled": "⊘",
    "skipped": "↷",
    "handed_back": "↩",
    "rate_limited": "⏸",
    "planned": "·",
}
# Which hidden nodes a crowded wave shows first: failures, then what is moving, then the rest.
_PRESSING = {"failed": 0, "timed_out": 0, "lost": 0, "running": 1, "queued": 2, "pending": 3}
_LABEL_CHARS = 20  # what fits a node in bold at its widest letters; the rest is clipped


@dataclass(frozen=True)
class Node:
    id: int
    key: str  # the task's key; "" for a node standing for several tasks
    wave: int
    x: float
    y: float
    state: str
    label: str  # the key, shortened to fit
    hidden: int = 0  # a group node: how many tasks it stands for
    counts: tuple[tuple[str, int], ...] = ()  # a group node: (state, how many), most pressing first
    waves_label: str = ""  # a folded run of waves: "waves 1–37"

    @property
    def glyph(self) -> str:
        return GLYPHS.get(self.state, "·")

    @property
    def cx(self) -> float:
        return self.x + NODE_W / 2


@dataclass(frozen=True)
class Edge:
    source: int
    target: int
    path: str  # an SVG path: a curve from the right side of the source to the left of the target
    settled: bool  # the dependency succeeded (drawn solid; dashed while it has not)
    count: int = 1  # dependencies it stands for (edges into or out of a group node)


@dataclass
class Layout:
    nodes: list[Node]
    edges: list[Edge]
    width: float
    height: float
    columns: list[tuple[float, str]]  # (x of the column's centre, heading)
    waves: int  # waves in the whole graph
    tasks: int
    hidden: int  # tasks not drawn as nodes of their own
    counts: list[tuple[str, int]] = field(default_factory=list)  # states over the whole graph


def crossings(order: Sequence[Sequence[str]], deps: Graph) -> int:
    """Edge crossings of a layered drawing: pairs of edges between the same two waves that cross."""
    where = {key: (w, i) for w, wave in enumerate(order) for i, key in enumerate(wave)}
    between: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for key, ds in deps.items():
        if key not in where:
            continue
        wk, ik = where[key]
        for d in ds:
            if d in where:
                wd, i_d = where[d]
                between.setdefault((wd, wk), []).append((i_d, ik))
    total = 0
    for pairs in between.values():
        pairs.sort()
        total += _inversions([b for _, b in pairs])
    return total


def _inversions(seq: list[int]) -> int:
    """Pairs i < j with seq[i] > seq[j]."""
    count, seen = 0, []
    for value in seq:
        at = bisect_right(seen, value)
        count += len(seen) - at
        seen.insert(at, value)
    return count


def _centre(key: str, neighbours: Graph, pos: Mapping[str, float]) -> tuple[float, float]:
    """Where a node goes: the mean position of its neighbours (its own when it has none)."""
    near = [pos[n] for n in neighbours[key] if n in pos]
    return (sum(near) / len(near) if near else pos[key], pos[key])


def order_waves(deps: Graph, sweeps: int = 4) -> list[list[str]]:
    """Waves, each ordered by the barycentre heuristic; never more crossings than the spec's order."""
    layers = plan_waves(deps)
    dependents: dict[str, list[str]] = {key: [] for key in deps}
    for key, ds in deps.items():
        for d in ds:
            dependents[d].append(key)
    best, best_crossings = [list(w) for w in layers], crossings(layers, deps)
    current = [list(w) for w in layers]
    for sweep in range(sweeps):
        pos = {key: (i + 0.5) / len(wave) for wave in current for i, key in enumerate(wave)}
        down = sweep % 2 == 0
        span = range(1, len(current)) if down else range(len(current) - 2, -1, -1)
        neighbours = deps if down else dependents
        for w in span:
            current[w].sort(key=lambda key: _centre(key, neighbours, pos))
            size = len(current[w])
            pos.update({key: (i + 0.5) / size for i, key in enumerate(current[w])})
        found = crossings(current, deps)
        if found < best_crossings:
            best, best_crossings = [list(w) for w in current], found
    return best


def _frontier(layers: Sequence[Sequence[str]], states: Mapping[str, str]) -> int:
    """The first wave with a task still to finish (0 when all is done)."""
    for w, wave in enumerate(layers):
        if any(states.get(key, "pending") not in RUN_TERMINAL for key in wave):
            return w
    return 0


def _counts(keys: Sequence[str], states: Mapping[str, str], default: str) -> tuple[tuple[str, int], ...]:
    found: dict[str, int] = {}
    for key in keys:
        s = states.get(key, default)
        found[s] = found.get(s, 0) + 1
    return tuple(sorted(found.items(), key=lambda kv: (_PRESSING.get(kv[0], 4), kv[0])))


def _short(key: str) -> str:
    return key if len(key) <= _LABEL_CHARS else key[: _LABEL_CHARS - 1] + "…"


def _edge_path(source: Node, target: Node) -> str:
    x1, y1 = source.x + NODE_W, source.y + NODE_H / 2
    x2, y2 = target.x, target.y + NODE_H / 2
    bend = max(GAP_X * 0.6, (x2 - x1) * 0.4)
    return f"M{x1:g} {y1:g}C{x1 + bend:g} {y1:g} {x2 - bend:g} {y2:g} {x2:g} {y2:g}"


def layout(
    deps: Graph,
    states: Mapping[str, str] | None = None,
    *,
    per_wave: int = 30,
    max_waves: int = 16,
    max_nodes: int = 240,
    default_state: str = "pending",
    order: Sequence[Sequence[str]] | None = None,
) -> Layout:
    """Place a dependency graph (no cycle, every dependency a key) for drawing.

    `states` maps keys to run states (missing: `default_state`). At most `max_waves` columns
    and about `max_nodes` nodes are drawn, whatever the size of the graph. `order` is what
    `order_waves(deps)` returned before (it depends on the dependencies only, not on the states).
    """
    states = states or {}
    layers = [list(w) for w in order] if order is not None else order_waves(deps)
    n_waves = len(layers)
    # The window of waves drawn: the whole graph, or max_waves around the first unfinished wave.
    first, last = 0, n_waves
    if n_waves > max_waves:
        inner = max_waves - 2  # one column each for the folded waves before and after
        first = min(max(_frontier(layers, states) - inner // 4, 0), n_waves - inner)
        first = 0 if first == 1 else first  # folding a single wave saves nothing
        last = min(first + inner + (1 if first == 0 else 0), n_waves)
        if last == n_waves - 1:
            last = n_waves
    shown_waves = last - first + (first > 0) + (last < n_waves)
    cap = max(3, min(per_wave, max_nodes // max(shown_waves, 1)))

    columns: list[list[tuple[str, ...]]] = []  # per column, entries: ("task", key) or ("group", keys...)
    headings: list[str] = []
    wave_of_column: list[int] = []
    if first > 0:
        folded = [k for layer in layers[:first] for k in layer]
        columns.append([("fold", *folded)])
        headings.append(f"waves 1–{first}" if first > 1 else "wave 1")
        wave_of_column.append(0)
    for w in range(first, last):
        wave = layers[w]
        if len(wave) <= cap:
            columns.append([("task", k) for k in wave])
        else:
            rank = {k: i for i, k in enumerate(wave)}
            keep = set(sorted(wave, key=lambda k: (_PRESSING.get(states.get(k, default_state), 4), rank[k]))[: cap - 1])
            rest = tuple(k for k in wave if k not in keep)
            columns.append([("task", k) for k in wave if k in keep] + [("more", *rest)])
        headings.append(f"wave {w + 1}")
        wave_of_column.append(w)
    if last < n_waves:
        folded = [k for layer in layers[last:] for k in layer]
        columns.append([("fold", *folded)])
        headings.append(f"waves {last + 1}–{n_waves}" if n_waves - last > 1 else f"wave {n_waves}")
        wave_of_column.append(last)

    tallest = max((len(c) for c in columns), default=0)
    pitch = NODE_H + GAP_Y
    nodes: list[Node] = []
    node_of: dict[str, int] = {}
    for c, column in enumerate(columns):
        x = MARGIN + c * (NODE_W + GAP_X)
        top = MARGIN + HEAD + (tallest - len(column)) * pitch / 2
        for i, (kind, *keys) in enumerate(column):
            y = top + i * pitch
            nid = len(nodes)
            if kind == "task":
                key = keys[0]
                nodes.append(Node(nid, key, wave_of_column[c], x, y, states.get(key, default_state), _short(key)))
            else:
                counts = _counts(keys, states, default_state)
                label = f"+{len(keys)} more" if kind == "more" else f"{len(keys)} task{'s' if len(keys) != 1 else ''}"
                nodes.append(
                    Node(
                        nid,
                        "",
                        wave_of_column[c],
                        x,
                        y,
                        counts[0][0] if counts else default_state,
                        label,
                        hidden=len(keys),
                        counts=counts,
                        waves_label=headings[c] if kind == "fold" else "",
                    )
                )
            for key in keys:
                node_of[key] = nid

    found: dict[tuple[int, int], list[bool]] = {}
    for key, ds in deps.items():
        target = node_of[key]
        for d in ds:
            source = node_of[d]
            if source == target or nodes[source].x >= nodes[target].x:
                continue
            if nodes[source].waves_label and nodes[target].waves_label:
                continue  # from the folded waves before to those after: across the whole drawing
            found.setdefault((source, target), []).append(states.get(d, default_state) == "succeeded")
    edges = [Edge(s, t, _edge_path(nodes[s], nodes[t]), all(done), len(done)) for (s, t), done in sorted(found.items())]
    width = MARGIN * 2 + len(columns) * NODE_W + max(len(columns) - 1, 0) * GAP_X
    height = MARGIN * 2 + HEAD + tallest * pitch - (GAP_Y if tallest else 0)
    return Layout(
        nodes=nodes,
        edges=edges,
        width=width,
        height=height,
        columns=[(MARGIN + c * (NODE_W + GAP_X) + NODE_W / 2, h) for c, h in enumerate(headings)],
        waves=n_waves,
        tasks=len(deps),
        hidden=sum(n.hidden for n in nodes),
        counts=list(_counts(list(deps), states, default_state)),
    )
