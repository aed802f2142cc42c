"""YAML text -> plain Python values, with the line and column of every field.

ruamel.yaml's parser (its libyaml-based C parser when installed) produces events; this module
builds plain dicts, lists and scalars from them itself instead of using a constructor, because:

- no tag ever constructs an object: only the standard YAML tags are accepted, anything else
  (``!!python/object``, ``!foo``) is an error;
- duplicate keys, merge keys and anchors that expand into millions of nodes ("billion laughs")
  are refused while building, before anything else sees the value;
- every node's position is recorded under its field path, so an error found much later (by
  pydantic, or by a cross-document rule) still points at ``file:line:col``;
- it is several times faster than ruamel's composer and resolver, which matters for repos with
  thousands of documents.

Plain scalars are resolved with the YAML 1.2 core schema (what ruamel uses by default):
``yes``/``no``/``on``/``off`` are strings, not booleans.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from ruamel.yaml.reader import ReaderError

from reconciler.errors import Diagnostic

try:  # ruamel.yaml.clib: libyaml's parser, ~10x faster than the pure-Python one.
    from _ruamel_yaml import CParser
except ImportError:  # pragma: no cover - depends on the installation
    CParser = None

USING_LIBYAML: bool = CParser is not None

# How many nodes aliases may add to one document when expanded. Real manifests use a few
# anchors for shared selectors; a billion-laughs document needs millions.
ALIAS_EXPANSION_LIMIT = 10_000

FieldPath = tuple[str | int, ...]

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}
_TAG_TYPES: dict[str, type | tuple[type, ...]] = {
    _TAG + "int": int, _TAG + "float": (int, float), _TAG + "bool": bool, _TAG + "null": type(None),
}
_NULLS = {"", "~", "null", "Null", "NULL"}
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_SPECIAL_FLOATS = {".inf": float("inf"), "+.inf": float("inf"), "-.inf": float("-inf"), ".nan": float("nan")}
# First characters a non-string plain scalar can start with: the fast path skips everything else.
_MAYBE_NOT_STR = frozenset("0123456789-+.~nNtTfF")
# Stands for the key of a duplicate entry, whose value is dropped (the first definition wins).
_DROPPED = "\x00dropped"


@dataclass
class YamlDocument:
    """One document of a file: its value and where each field of it was written (1-based)."""

    value: Any
    line: int
    col: int
    positions: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: FieldPath) -> tuple[int, int]:
        """Where the value at ``path`` was written, or the nearest enclosing node that was."""
        while path:
            found = self.positions.get(path)
            if found is not None:
                return found
            path = path[:-1]
        return self.positions.get((), (self.line, self.col))

    def key_position(self, path: FieldPath) -> tuple[int, int]:
        """Where the key of the field at ``path`` was written (falls back to its value)."""
        return self.key_positions.get(path) or self.position(path)


class YamlFileError(Exception):
    """The file cannot be read as YAML at all; carries the first fatal diagnostic."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(str(diagnostic))
        self.diagnostic = diagnostic


def resolve_plain(text: str) -> Any:
    """The value of an untagged plain scalar under the YAML 1.2 core schema."""
    if text and text[0] not in _MAYBE_NOT_STR:
        return text
    if text in _NULLS:
        return None
    if text in _BOOLS:
        return _BOOLS[text]
    if _INT.fullmatch(text):
        return int(text)
    if text.startswith(("0o", "0x")) and len(text) > 2:
        try:
            return int(text[2:], 8 if text[1] == "o" else 16)
        except ValueError:
            return text
    if _FLOAT.fullmatch(text):
        return float(text)
    lowered = text.lower()
    return _SPECIAL_FLOATS.get(lowered, text) if lowered in _SPECIAL_FLOATS else text


def _event_source(data: bytes) -> tuple[Callable[[], Any], Callable[[], None]]:
    """(next event or None at the end, dispose): a plain call per event, no generator in between."""
    if CParser is not None:
        parser = CParser(data)
        return parser.get_event, parser.dispose
    events: Iterator[Any] = YAML(typ="safe", pure=True).parse(data.decode("utf-8"))
    return lambda: next(events, None), lambda: None


class _Frame:
    """A mapping or sequence being built."""

    __slots__ = ("anchor", "container", "key", "key_pos", "path", "size")

    def __init__(self, container: Any, path: FieldPath, anchor: str | None) -> None:
        self.container = container
        self.path = path
        self.anchor = anchor
        self.key: str | None = None  # mapping: the key waiting for its value
        self.key_pos: tuple[int, int] = (0, 0)
        self.size = 1


class _Builder:
    def __init__(self, file: str, data: bytes) -> None:
        self.file = file
        self.data = data
        self.documents: list[YamlDocument] = []
        self.diagnostics: list[Diagnostic] = []

    def diag(self, mark: Any, message: str, path: FieldPath = ()) -> None:
        self.diagnostics.append(
            Diagnostic(self.file, mark.line + 1, mark.column + 1, message, format_path(path)))

    def fatal(self, mark: Any, message: str) -> YamlFileError:
        return YamlFileError(Diagnostic(self.file, mark.line + 1, mark.column + 1, message))

    def run(self) -> None:
        next_event, dispose = _event_source(self.data)
        try:
            self.build(next_event)
        finally:
            dispose()

    def build(self, next_event: Callable[[], Any]) -> None:
        stack: list[_Frame] = []
        anchors: dict[str, tuple[Any, int]] = {}  # name -> (value, nodes it expands to)
        doc: YamlDocument | None = None
        expanded = 0  # nodes added to the current document by aliases
        while (event := next_event()) is not None:
            kind = type(event)
            if kind is ScalarEvent or kind is AliasEvent:
                if kind is ScalarEvent:
                    value = self.scalar(event, stack)
                    size = 1
                else:
                    if event.anchor not in anchors:
                        raise self.fatal(event.start_mark, f"alias *{event.anchor} refers to no anchor "
                                         "defined before it (recursive or undefined anchors are not allowed)")
                    value, size = anchors[event.anchor]
                    expanded += size
                    if expanded > ALIAS_EXPANSION_LIMIT:
                        raise self.fatal(event.start_mark, "aliases expand to more than "
                                         f"{ALIAS_EXPANSION_LIMIT} nodes in this document; refusing "
                                         "(is this a billion-laughs attack?)")
                if kind is ScalarEvent and event.anchor:
                    anchors[event.anchor] = (value, 1)
                if not stack:
                    assert doc is not None
                    doc.value = value
                    doc.positions[()] = (event.start_mark.line + 1, event.start_mark.column + 1)
                    continue
                self.place(stack[-1], value, size, event.start_mark, doc)
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                self.check_tag(event, "map" if kind is MappingStartEvent else "seq")
                path = self.child_path(stack)
                assert doc is not None
                if stack and stack[-1].container is not None and isinstance(stack[-1].container, dict) \
                        and stack[-1].key is None:
                    raise self.fatal(event.start_mark, "a mapping key must be a plain string, not a "
                                     "mapping or a list")
                doc.positions[path] = (event.start_mark.line + 1, event.start_mark.column + 1)
                container: Any = {} if kind is MappingStartEvent else []
                stack.append(_Frame(container, path, event.anchor))
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                frame = stack.pop()
                if frame.anchor:
                    anchors[frame.anchor] = (frame.container, frame.size)
                if stack:
                    self.place(stack[-1], frame.container, frame.size, event.start_mark, doc, nested=True)
                else:
                    assert doc is not None
                    doc.value = frame.container
            elif kind is DocumentStartEvent:
                doc = YamlDocument(None, event.start_mark.line + 1, event.start_mark.column + 1)
                anchors = {}
                expanded = 0
            elif kind is DocumentEndEvent:
                assert doc is not None
                self.documents.append(doc)
                doc = None

    def child_path(self, stack: list[_Frame]) -> FieldPath:
        if not stack:
            return ()
        top = stack[-1]
        if isinstance(top.container, list):
            return (*top.path, len(top.container))
        return (*top.path, top.key) if top.key is not None else top.path

    def place(self, frame: _Frame, value: Any, size: int, mark: Any, doc: YamlDocument | None,
              nested: bool = False) -> None:
        assert doc is not None
        frame.size += size
        container = frame.container
        if isinstance(container, list):
            if not nested:
                doc.positions[(*frame.path, len(container))] = (mark.line + 1, mark.column + 1)
            container.append(value)
            return
        if frame.key is None:  # this scalar is a key
            if not isinstance(value, str):
                value = "" if value is None else str(value)
            if value == "<<":
                self.diag(mark, "merge keys (<<) are not supported; write the fields out", frame.path)
            elif value in container:
                line, col = doc.key_positions[(*frame.path, value)]
                self.diag(mark, f'duplicate key "{value}" (first defined at line {line}, column {col})',
                          (*frame.path, value))
                value = None  # the value that follows is dropped: the first definition wins
            frame.key = value if value is not None else _DROPPED
            if value is not None and value != "<<":
                frame.key_pos = (mark.line + 1, mark.column + 1)
            return
        key = frame.key
        frame.key = None
        if key is _DROPPED or key == "<<":
            return
        path = (*frame.path, key)
        doc.key_positions[path] = frame.key_pos
        if not nested:
            doc.positions[path] = (mark.line + 1, mark.column + 1)
        container[key] = value

    def scalar(self, event: Any, stack: list[_Frame]) -> Any:
        tag = event.tag
        text: str = event.value
        if tag is None or tag == "!":
            return resolve_plain(text) if event.implicit[0] else text
        self.check_tag(event, "scalar")
        if tag == _TAG + "str":
            return text
        value = resolve_plain(text)
        expected = _TAG_TYPES.get(tag)
        if expected is not None and (not isinstance(value, expected)
                                     or (expected is int and isinstance(value, bool))):
            self.diag(event.start_mark, f"{text!r} is not a valid {tag.removeprefix(_TAG)}",
                      self.child_path(stack))
        return value

    def check_tag(self, event: Any, kind: str) -> None:
        tag = event.tag
        if tag is None or tag == "!":
            return
        allowed = _SCALAR_TAGS if kind == "scalar" else {_TAG + kind}
        if tag not in allowed:
            shown = "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag
            raise self.fatal(event.start_mark, f"tag {shown} is not allowed: only the standard tags "
                             "!!str, !!int, !!float, !!bool, !!null, !!map and !!seq are")



def parse_yaml(data: bytes, file: str) -> tuple[list[YamlDocument], list[Diagnostic]]:
    """Every document of one file, or the diagnostics that say why it cannot be used.

    ``data`` must already be valid UTF-8. A syntax error stops the file (a YAML parser cannot
    resynchronise reliably); problems inside well-formed YAML (duplicate keys) are all reported.
    """
    builder = _Builder(file, data)
    try:
        builder.run()
    except YamlFileError as exc:
        return [], [exc.diagnostic]
    except MarkedYAMLError as exc:
        return [], [_syntax_diagnostic(file, exc)]
    except ReaderError as exc:
        line, col = offset_position(data, exc.position)
        return [], [Diagnostic(file, line, col, f"unacceptable character {exc.character!r}: {exc.reason}")]
    except YAMLError as exc:  # pragma: no cover - other parser failures carry no position
        return [], [Diagnostic(file, 1, 1, f"not valid YAML: {exc}")]
    return builder.documents, builder.diagnostics


def _syntax_diagnostic(file: str, exc: MarkedYAMLError) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    message = f"YAML syntax error: {exc.problem}"
    if exc.context:
        message += f" {exc.context}"
        if exc.context_mark is not None and exc.context_mark is not mark:
            message += f" (started at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return Diagnostic(file, line, col, message)


def offset_position(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and column (in characters) of a byte offset."""
    before = data[:offset]
    line = before.count(b"\n") + 1
    last = before.rfind(b"\n")
    col = len(before[last + 1:].decode("utf-8", errors="replace")) + 1
    return line, col


def format_path(path: FieldPath) -> str:
    """``("spec", "addresses", 0)`` -> ``spec.addresses[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
