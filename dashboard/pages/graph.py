"""The dependency graph's drawing: what `dashboard/_graph.html` needs, for a batch or a plan.

The layout (waves, order, coordinates, folding of big graphs) is `spawner.core.graph`, read through
the selectors; here each node gets its link, its texts and its tooltip, ready for the template.
"""

from __future__ import annotations

from dashboard.pages.links import run_url_template
from spawner import selectors
from spawner.models import Batch


def _words(state: str) -> str:
    return state.replace("_", " ")


def _drawing(layout, run_ids: dict[str, int] | None, dom_id: str) -> dict:
    glyphs = selectors.state_glyphs()
    url = run_url_template() if run_ids else None
    nodes = []
    for n in layout.nodes:
        if n.key:
            line2 = _words(n.state)
            title = f"{n.key}: {line2} (wave {n.wave + 1})"
        else:
            line2 = " · ".join(f"{count} {glyphs.get(state, '·')}" for state, count in n.counts)
            detail = ", ".join(f"{count} {_words(state)}" for state, count in n.counts)
            where = n.waves_label or f"wave {n.wave + 1}"
            title = f"{n.hidden} task{'s' if n.hidden != 1 else ''} not drawn one by one ({where}): {detail}"
        nodes.append(
            {
                "x": f"{n.x:g}",
                "y": f"{n.y:g}",
                "state": n.state,
                "glyph": n.glyph,
                "label": n.label,
                "line2": line2,
                "title": title,
                "group": not n.key,
                "url": url.format(run_ids[n.key]) if url and n.key in run_ids else "",
            }
        )
    legend = [(glyphs.get(state, "·"), _words(state), state, count) for state, count in layout.counts]
    return {
        "dom_id": dom_id,
        "live": run_ids is not None,  # a batch's graph: edges say whether each dependency is met
        "layout": layout,
        "nodes": nodes,
        "legend": legend,
        "shown": len(layout.nodes) - sum(1 for n in layout.nodes if not n.key),
    }


def graph_context(batch: Batch) -> dict:
    """The batch page's graph, live: the same drawing the websocket sends when runs change."""
    layout, run_ids = selectors.batch_graph(batch.id)
    return {"graph": _drawing(layout, run_ids, f"graph-{batch.id}")}


def plan_graph(batch_spec) -> dict:
    """The new-batch page's graph of a plan before launch."""
    return _drawing(selectors.plan_graph(batch_spec), None, "graph-plan")
