"""Reading a spec's text: YAML or JSON in, plain data out, within hard limits.

Every limit is checked while the document is composed, before anything is expanded or
converted: an alias bomb, a document nested a thousand deep or a number of ten thousand
digits is refused in milliseconds, with the line and the field, never with a traceback.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from spawner.spec.fields import FieldError, SpecInvalid, Where

MAX_SPEC_BYTES = 1_000_000  # the whole document, UTF-8
MAX_DEPTH = 32  # lists and mappings inside each other
MAX_ALIASES = 100  # `*name` references
MAX_VALUES = 200_000  # values in the document once every alias is expanded
MAX_EXPANDED_CHARS = 4_000_000  # characters of text in the document once every alias is expanded
MAX_TEXT_CHARS = 100_000  # any one text (a prompt, a variable)
MAX_NUMBER_CHARS = 32  # a number as written: 32 digits is far beyond any count or duration

_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:merge",
}
_NUMBER_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}


class _PlainLoader(yaml.SafeLoader):
    """Safe YAML that keeps dates as text: a spec holds only what JSON can hold."""


_PlainLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _Refused(Exception):
    def __init__(self, error: FieldError):
        self.error = error


def real_text(value: str) -> str | None:
    """The text with JSON's surrogate pairs (`\\ud83d\\ude42`) made the character they stand for;
    None if a lone surrogate remains (no character at all: it cannot be stored)."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:
        joined = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError:
        return None
    return joined


class _BoundedLoader(_PlainLoader):
    """Composes the document node by node, counting as it goes."""

    def __init__(self, text: str):
        super().__init__(text)
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, characters) with aliases expanded
        self._open: list[int] = [0]  # values so far in each collection being composed
        self._open_chars: list[int] = [0]  # characters so far in each collection being composed
        self._path: list[Any] = []  # where the node being composed is: "tasks", 3, "prompt"
        self._aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        line = event.start_mark.line + 1
        is_alias = isinstance(event, yaml.AliasEvent)
        step = index if isinstance(index, int) else index.value if isinstance(index, yaml.ScalarNode) else "(key)"
        self._path.append(step if parent is not None else None)
        try:
            if is_alias:
                self._aliases += 1
                if self._aliases > MAX_ALIASES:
                    raise self._refuse(line, f"uses more than {MAX_ALIASES} aliases (*name)")
            if len(self._open) > MAX_DEPTH:
                raise self._refuse(line, f"is nested more than {MAX_DEPTH} lists or mappings deep")
            self._open.append(0)
            self._open_chars.append(0)
            try:
                node = super().compose_node(parent, index)
            finally:
                inner = self._open.pop()
                inner_chars = self._open_chars.pop()
            if is_alias:
                known = self._sizes.get(id(node))
                if known is None:
                    raise self._refuse(line, "an alias (*name) refers to the list or mapping it is in")
                size, chars = known
            else:
                self._check(node, line)
                size = inner + 1
                chars = inner_chars + (len(node.value) if isinstance(node, yaml.ScalarNode) else 0)
                self._sizes[id(node)] = (size, chars)
            self._open[-1] += size
            self._open_chars[-1] += chars
            if self._open[-1] > MAX_VALUES:
                raise self._refuse(line, f"expands to more than {MAX_VALUES} values (aliases count each time)")
            if self._open_chars[-1] > MAX_EXPANDED_CHARS:
                raise self._refuse(
                    line, f"expands to more than {MAX_EXPANDED_CHARS} characters of text (aliases count each time)"
                )
            return node
        finally:
            self._path.pop()

    def _check(self, node: yaml.Node, line: int) -> None:
        if node.tag not in _PLAIN_TAGS:
            raise self._refuse(line, f"must be plain text, numbers, lists or mappings, not {node.tag}")
        if not isinstance(node, yaml.ScalarNode):
            return
        if node.tag in _NUMBER_TAGS and len(node.value) > MAX_NUMBER_CHARS:
            raise self._refuse(line, f"a number longer than {MAX_NUMBER_CHARS} characters")
        if node.tag == "tag:yaml.org,2002:float" and not math.isfinite(self.construct_yaml_float(node)):
            raise self._refuse(line, f"must be a finite number, got {node.value[:40]}")
        if len(node.value) > MAX_TEXT_CHARS:
            raise self._refuse(line, f"is over {MAX_TEXT_CHARS} characters long")
        text = real_text(node.value)
        if text is None:
            raise self._refuse(line, "holds a lone surrogate (half of a \\u escape pair): not a character")
        if "\x00" in text:
            raise self._refuse(line, "contains a NUL character")
        node.value = text

    def _refuse(self, line: int, message: str) -> _Refused:
        path = [step if len(str(step)) <= 40 else "…" for step in self._path if step is not None]
        if len(path) > 8:
            path = [*path[:6], "…", path[-1]]
        if len(path) >= 2 and path[0] == "tasks" and isinstance(path[1], int):
            field = ".".join(str(s) for s in path[2:])
            where: str = str(Where(path[1], None, line))
            return _Refused(FieldError(where, field, message, None, path[1], line))
        field = ".".join(str(s) for s in path)
        return _Refused(FieldError("batch" if field else f"line {line}", field, message, None, None, line))


def parse_text(text: str) -> tuple[Any, dict[Any, int]]:
    """YAML (JSON is YAML too) -> data, plus source lines: of each task by index (`3`), and of each
    field as written, a task's by (index, name) (`(3, "prompt")`), the batch's by ("batch", name)."""
    if len(text) > MAX_SPEC_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise SpecInvalid([FieldError("spec", "", f"is over {MAX_SPEC_BYTES} bytes")])
    if "\x00" in text:
        raise SpecInvalid([FieldError("spec", "", "contains a NUL character")])
    loader = None
    try:
        loader = _BoundedLoader(text)  # reading starts here: a control character is refused now
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except _Refused as refused:
        raise SpecInvalid([refused.error]) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        code = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        message = f"not valid YAML or JSON: the character {code} is not allowed (a control character or half a pair)"
        raise SpecInvalid([FieldError(f"line {line}", "", message, line=line)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "spec"
        problem = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark else None
        raise SpecInvalid([FieldError(where, "", f"not valid YAML or JSON: {problem}", line=line)]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if bad := _not_plain(data, ""):
        raise SpecInvalid([FieldError(bad or "spec", "", "must be plain text, numbers, lists or mappings")])
    if repeated := _repeated_fields(node):
        raise SpecInvalid(repeated)
    lines: dict[Any, int] = {i: item.start_mark.line + 1 for i, item in enumerate(_task_nodes(node))}
    lines.update(_field_lines(node))
    return data, lines


def _not_plain(value: Any, path: str) -> str | None:
    """The path of the first value that is not JSON data (a mapping key that is a list, say)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str | int | float | bool) and k is not None:
                return f"{path}.{k!r}"
            if found := _not_plain(v, f"{path}.{k}" if path else str(k)):
                return found
        return None
    if isinstance(value, list):
        return next((f for i, v in enumerate(value) if (f := _not_plain(v, f"{path}[{i}]"))), None)
    return None if value is None or isinstance(value, str | int | float | bool) else path


def _task_nodes(node: yaml.Node | None) -> list[yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        return []
    for key_node, value_node in node.value:
        if key_node.value == "tasks" and isinstance(value_node, yaml.SequenceNode):
            return value_node.value
    return []


def _field_lines(node: yaml.Node | None) -> dict[tuple[Any, str], int]:
    """The line each field is written on (the first time, if it is given twice)."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    places: list[tuple[Any, yaml.Node]] = [("batch", node)]
    places += list(enumerate(_task_nodes(node)))
    found: dict[tuple[Any, str], int] = {}
    for place, mapping in places:
        if isinstance(mapping, yaml.MappingNode):
            for key_node, _ in mapping.value:
                if isinstance(key_node, yaml.ScalarNode):
                    found.setdefault((place, key_node.value), key_node.start_mark.line + 1)
    return found


def _repeated_fields(node: yaml.Node | None) -> list[FieldError]:
    """YAML and JSON silently keep the last of two equal keys; in a spec that is always a mistake."""
    if not isinstance(node, yaml.MappingNode):
        return []
    places: list[tuple[str | Where, str | None, yaml.MappingNode]] = [("batch", None, node)]
    for i, item in enumerate(_task_nodes(node)):
        if isinstance(item, yaml.MappingNode):
            keys = (v.value for k, v in item.value if k.value == "key" and isinstance(v, yaml.ScalarNode))
            key = next(keys, None)
            places.append((Where(i, key, item.start_mark.line + 1), key, item))
    errors = []
    for where, task, mapping in places:
        first_line: dict[str, int] = {}
        for key_node, _ in mapping.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in first_line:
                message = f"is given twice (lines {first_line[key_node.value]} and {line}); give it once"
                index = where.index if isinstance(where, Where) else None
                errors.append(FieldError(str(where), key_node.value, message, task, index, line))
            first_line.setdefault(key_node.value, line)
    return errors
