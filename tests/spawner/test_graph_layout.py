"""The dependency graph's layout: waves as columns, few crossings, bounded size for big batches."""

from __future__ import annotations

import random

from spawner.core import graph
from spawner.core.planning import waves


def test_waves_are_columns_left_to_right_and_edges_go_right():
    deps = {"a": [], "b": [], "c": ["a"], "d": ["a", "b"], "e": ["c", "d"]}
    lay = graph.layout(deps, {"a": "succeeded", "c": "failed"})
    by_key = {n.key: n for n in lay.nodes}
    assert by_key["a"].x == by_key["b"].x < by_key["c"].x == by_key["d"].x < by_key["e"].x
    assert [h for _, h in lay.columns] == ["wave 1", "wave 2", "wave 3"]
    assert len(lay.edges) == 5
    for e in lay.edges:
        assert lay.nodes[e.source].x < lay.nodes[e.target].x
        assert e.path.startswith("M")
    # A dependency that succeeded is drawn settled, the others not.
    settled = {(lay.nodes[e.source].key, lay.nodes[e.target].key): e.settled for e in lay.edges}
    assert settled[("a", "c")] and not settled[("c", "e")] and not settled[("b", "d")]
    assert by_key["c"].state == "failed" and by_key["c"].glyph == "✗"
    assert by_key["e"].state == "pending" and by_key["e"].glyph == "○"
    # Everything fits inside the drawing.
    for n in lay.nodes:
        assert n.x >= 0 and n.x + graph.NODE_W <= lay.width and n.y >= 0 and n.y + graph.NODE_H <= lay.height


def test_every_state_has_its_own_glyph():
    assert len(set(graph.GLYPHS.values())) == len(graph.GLYPHS)


def test_crossings_are_counted():
    deps = {"a": [], "b": [], "x": ["b"], "y": ["a"]}
    assert graph.crossings([["a", "b"], ["x", "y"]], deps) == 1
    assert graph.crossings([["a", "b"], ["y", "x"]], deps) == 0


def test_barycentre_untangles_a_crossed_ladder():
    # Spec order crosses every edge: a0..a5 feed b5..b0.
    n = 6
    deps = {f"a{i}": [] for i in range(n)} | {f"b{i}": [f"a{n - 1 - i}"] for i in range(n)}
    assert graph.crossings(waves(deps), deps) == n * (n - 1) // 2
    ordered = graph.order_waves(deps)
    assert graph.crossings(ordered, deps) == 0
    assert sorted(ordered[0]) == sorted(waves(deps)[0])


def test_the_ordering_never_adds_crossings():
    rng = random.Random(7)
    for _ in range(30):
        keys = [f"t{i}" for i in range(rng.randint(2, 40))]
        deps = {k: rng.sample(keys[:i], min(i, rng.randint(0, 3))) for i, k in enumerate(keys)}
        before = graph.crossings(waves(deps), deps)
        ordered = graph.order_waves(deps)
        assert graph.crossings(ordered, deps) <= before
        assert [sorted(w) for w in ordered] == [sorted(w) for w in waves(deps)]


def test_a_wide_wave_folds_into_a_more_node_showing_failures_first():
    deps = {"root": []} | {f"w{i:03d}": ["root"] for i in range(500)}
    states = {f"w{i:03d}": "succeeded" for i in range(500)} | {"w250": "failed", "w499": "running"}
    lay = graph.layout(deps, states, per_wave=10)
    second = [n for n in lay.nodes if n.wave == 1]
    assert len(second) == 10
    shown = {n.key for n in second if n.key}
    assert {"w250", "w499"} <= shown  # the failure and the running one are kept
    more = second[-1]
    assert more.hidden == 491 and more.label == "+491 more" and more.key == ""
    assert dict(more.counts) == {"succeeded": 491}
    assert lay.hidden == 491 and lay.tasks == 501
    # The hidden ones' edges arrive as one edge into the group.
    into_more = [e for e in lay.edges if e.target == more.id]
    assert len(into_more) == 1 and into_more[0].count == 491


def test_a_long_chain_draws_a_window_of_waves_around_the_work_in_progress():
    keys = [f"step-{i}" for i in range(1000)]
    deps = {k: ([keys[i - 1]] if i else []) for i, k in enumerate(keys)}
    states = {k: ("succeeded" if i < 600 else "running" if i == 600 else "pending") for i, k in enumerate(keys)}
    lay = graph.layout(deps, states, max_waves=12)
    assert len(lay.columns) <= 12 and lay.waves == 1000
    assert any(n.key == "step-600" for n in lay.nodes)
    before, after = lay.nodes[0], lay.nodes[-1]
    assert (
        before.waves_label.startswith("waves 1–")
        and before.hidden > 500
        and dict(before.counts) == {"succeeded": before.hidden}
    )
    assert after.waves_label.endswith("–1000") and dict(after.counts) == {"pending": after.hidden}
    assert lay.hidden + sum(1 for n in lay.nodes if n.key) == 1000


def test_a_thousand_tasks_stay_within_the_node_budget():
    rng = random.Random(3)
    keys = [f"k{i}" for i in range(1000)]
    deps = {k: rng.sample(keys[max(0, i - 50) : i], min(i, 2)) for i, k in enumerate(keys)}
    lay = graph.layout(deps, max_nodes=240)
    assert len(lay.nodes) <= 240 + 2 * 16
    assert lay.tasks == 1000
    assert sum(n.hidden for n in lay.nodes) + sum(1 for n in lay.nodes if n.key) == 1000


def test_long_keys_are_shortened_for_the_label_only():
    key = "a-very-long-task-key-that-does-not-fit-in-a-node"
    lay = graph.layout({key: []})
    assert lay.nodes[0].key == key and lay.nodes[0].label.endswith("…") and len(lay.nodes[0].label) <= 22


def test_an_empty_graph():
    lay = graph.layout({})
    assert lay.nodes == [] and lay.edges == [] and lay.waves == 0


def test_a_given_order_is_used_as_is():
    deps = {"a": [], "b": [], "c": ["a"], "d": ["b"]}
    lay = graph.layout(deps, order=[["b", "a"], ["d", "c"]])
    assert [n.key for n in lay.nodes] == ["b", "a", "d", "c"]
    assert lay.nodes[0].y < lay.nodes[1].y


def test_crossings_match_counting_every_pair():
    rng = random.Random(11)
    for _ in range(20):
        keys = [f"t{i}" for i in range(rng.randint(2, 30))]
        deps = {k: rng.sample(keys[:i], min(i, rng.randint(0, 3))) for i, k in enumerate(keys)}
        order = [rng.sample(w, len(w)) for w in waves(deps)]
        where = {k: (w, i) for w, wave in enumerate(order) for i, k in enumerate(wave)}
        edges = [(where[d], where[k]) for k, ds in deps.items() for d in ds]
        brute = sum(
            1
            for n, (a1, b1) in enumerate(edges)
            for a2, b2 in edges[n + 1 :]
            if (a1[0], b1[0]) == (a2[0], b2[0]) and (a1[1] - a2[1]) * (b1[1] - b2[1]) < 0
        )
        assert graph.crossings(order, deps) == brute
