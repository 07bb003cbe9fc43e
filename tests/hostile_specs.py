"""Hypothesis strategies for hostile spec documents, shared by the parser and new-batch page fuzz tests.

A document is built as text, so it may hold what no Python value can be dumped as: numbers of
thousands of digits, aliases and alias bombs, nesting a thousand deep, lone surrogates, NUL.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

# Every code point, surrogates, NUL and right-to-left marks included.
ANY_CHAR = st.characters(codec=None, exclude_categories=[])
ODD_TEXTS = [
    "\x00",
    "\ud83d",
    "\ude42",
    "\ud83d\ude42",
    "\U0001f642",
    "\u202eevil",
    "\ufeff",
    "e\u0301",
    "[/x]",
    "[bold]",
    "{{ x }}",
    "{{ deps.a.summary }}",
    "{{ key }}",
    "&a",
    "*a",
    "- x",
    "a: b",
    "\n",
    "'",
    '"',
    "\\",
]

short_text = st.one_of(st.text(ANY_CHAR, max_size=40), st.text(max_size=20), st.sampled_from(ODD_TEXTS))
long_text = st.tuples(st.sampled_from(["x", "{{ v }}", "é", "\U0001f642"]), st.integers(0, 120_000)).map(
    lambda p: p[0] * p[1]
)
# Long texts are one draw in ten: several in one document make it too big to get past the first check.
text = st.one_of(short_text, short_text, short_text, long_text)


def _quoted(value: str, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


quoted_text = st.builds(_quoted, text, st.sampled_from([True, True, True, False]))

raw_number = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.integers(1, 6000).map(lambda n: "9" * n),
    st.sampled_from([".inf", "-.inf", ".nan", "1.0e+999", "-0", "0x1F", "0o17", "1_000", "190:20:30", "1e5", "3.14"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
raw_leaf = st.one_of(
    quoted_text,
    raw_number,
    st.sampled_from(
        ["null", "true", "false", "~", "yes", "2024-01-01", "!!binary aGk=", "!!set {a: null}", "*nowhere"]
    ),
)


def _render_list(items: list[str]) -> str:
    return "[" + ", ".join(items) + "]"


def _render_map(pairs: list[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"


tree = st.recursive(
    raw_leaf,
    lambda kids: st.one_of(
        st.lists(kids, max_size=5).map(_render_list),
        st.lists(st.tuples(quoted_text, kids), max_size=5).map(_render_map),
    ),
    max_leaves=30,
)

deep = st.integers(0, 2000).map(lambda d: "[" * d + "]" * d)


def alias_bomb(levels: int, fanout: int) -> str:
    lines = ["a0: &a0 [" + ",".join(['"x"'] * fanout) + "]"]
    lines += [f"a{n}: &a{n} [" + ",".join([f"*a{n - 1}"] * fanout) + "]" for n in range(1, levels + 1)]
    return "{" + ", ".join(lines) + "}"


bomb = st.builds(alias_bomb, st.integers(0, 12), st.integers(1, 12))

glob = st.one_of(
    st.integers(0, 2000).map(lambda n: "**/" * n + "x"),
    st.integers(0, 2000).map(lambda n: "a/" * n + "b"),
    st.text(alphabet="*?[]!/ab.-", max_size=60),
    st.sampled_from(["src/**", "docs/", ".", "**", "*.py", "src/[ab].py", "/"]),
)
key = st.one_of(st.sampled_from(["a", "b", "c", "d"]), st.text(alphabet="abc.-_ /", max_size=6), text)


@st.composite
def task(draw) -> str:
    fields = [("key", _quoted(draw(key), True))]
    if draw(st.booleans()):
        fields.append(("prompt", draw(st.one_of(quoted_text, tree))))
    if draw(st.booleans()):
        fields.append(("files", _render_list([_quoted(g, True) for g in draw(st.lists(glob, max_size=120))])))
    if draw(st.booleans()):
        fields.append(("depends_on", _render_list([_quoted(k, True) for k in draw(st.lists(key, max_size=4))])))
    for name in draw(st.lists(st.sampled_from(["timeout", "retries", "estimate", "priority", "cwd", "role", "vars"]))):
        fields.append((name, draw(st.one_of(raw_leaf, tree))))
    return _render_map(fields)


@st.composite
def spec_shaped(draw) -> str:
    """A document with the shape of a spec and hostile values in its fields."""
    fields = [("name", draw(st.one_of(quoted_text, raw_leaf))), ("agent", '"sh"')]
    if draw(st.booleans()):
        fields.append(("vars", draw(st.one_of(tree, deep, bomb))))
    for name in draw(st.lists(st.sampled_from(["mode", "max_parallel", "timeout", "webhook", "cwd", "aggregation"]))):
        fields.append((name, draw(st.one_of(raw_leaf, tree))))
    fields.append(("tasks", _render_list(draw(st.lists(task(), min_size=0, max_size=6)))))
    return _render_map(fields)


documents = st.one_of(
    spec_shaped(),
    spec_shaped(),
    spec_shaped(),
    tree,
    deep,
    bomb,
    st.text(ANY_CHAR, max_size=200),
    st.builds(lambda t: json.dumps({"name": t, "agent": "sh", "tasks": [{"key": "a", "prompt": t}]}), text),
)


def without_surrogates(value: str) -> str:
    """What a browser would send: a lone surrogate cannot be encoded, it becomes U+FFFD."""
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)


@st.composite
def nearly_valid(draw) -> str:
    """A valid spec but for one hostile value: gets past the reader into validation and planning."""
    keys = draw(st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=1, max_size=5, unique=True))
    tasks = []
    for n, k in enumerate(keys):
        fields = [("key", f'"{k}"'), ("prompt", draw(quoted_text))]
        if n and draw(st.booleans()):
            fields.append(("depends_on", _render_list([f'"{d}"' for d in draw(st.sets(st.sampled_from(keys)))])))
        if draw(st.booleans()):
            fields.append(("files", _render_list([_quoted(g, True) for g in draw(st.lists(glob, max_size=8))])))
        tasks.append(_render_map(fields))
    fields = [("name", draw(st.one_of(st.just('"n"'), quoted_text))), ("agent", '"sh"')]
    if draw(st.booleans()):
        fields.append(("vars", _render_map([('"v"', draw(st.one_of(quoted_text, tree)))])))
    fields.append(("tasks", _render_list(tasks)))
    return _render_map(fields)


documents = st.one_of(documents, nearly_valid(), nearly_valid())
