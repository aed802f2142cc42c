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

import json
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

from reconciler.common.errors import Diagnostic

try:  # ruamel.yaml.clib: libyaml's parser, ~10x faster than the pure-Python one.
    from _ruamel_yaml import CParser
except ImportError:  # pragma: no cover - depends on the installation
    CParser = None

USING_LIBYAML: bool = CParser is not None

# How many nodes aliases may add to one document when expanded. Real manifests use a few
# anchors for shared selectors; a billion-laughs document needs millions.
ALIAS_EXPANSION_LIMIT = 10_000
# How deeply mappings and lists may nest. Real documents stay below 15 levels; a hostile file of
# 300,000 nested "[" would otherwise cost memory quadratic in its depth (every field path).
MAX_DEPTH = 64

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
    """One document of a file: its value and where each field of it was written (1-based).

    Every mapping and list gets a number; a field's position is stored under a short "slot" key
    made of its container's number and its own key or index (``"3.addresses"``, ``"4[0]"``), so
    the cost per field does not grow with its depth or with the length of its parents' keys.
    Positions are packed into one int. Strings and ints are objects the cyclic garbage collector
    never scans, which matters for repos of thousands of documents.
    """

    value: Any
    line: int
    col: int
    positions: dict[str, int] = field(default_factory=dict)  # slot -> packed position of the value
    key_positions: dict[str, int] = field(default_factory=dict)  # slot -> packed position of the key
    containers: dict[str, int] = field(default_factory=dict)  # slot -> number of the container there

    def _slots(self, path: FieldPath) -> list[str]:
        """The slots along ``path`` for as far as the document has containers."""
        slots = [""]
        number: int | None = self.containers.get("")
        for part in path:
            if number is None:
                break
            slot = _slot(number, part)
            slots.append(slot)
            number = self.containers.get(slot)
        return slots

    def position(self, path: FieldPath) -> tuple[int, int]:
        """Where the value at ``path`` was written, or the nearest enclosing node that was."""
        for slot in reversed(self._slots(path)):
            found = self.positions.get(slot)
            if found is not None:
                return _unpack(found)
        return self.line, self.col

    def key_position(self, path: FieldPath) -> tuple[int, int]:
        """Where the key of the field at ``path`` was written (falls back to its value)."""
        slots = self._slots(path)
        found = self.key_positions.get(slots[-1]) if path and len(slots) == len(path) + 1 else None
        return _unpack(found) if found is not None else self.position(path)

    def has_key(self, path: FieldPath) -> bool:
        slots = self._slots(path)
        return bool(path) and len(slots) == len(path) + 1 and slots[-1] in self.key_positions


def _slot(container: int, part: str | int) -> str:
    return f"{container}[{part}]" if isinstance(part, int) else f"{container}.{part}"


def _pack(mark: Any) -> int:
    # Columns stay below 2**21: a file is at most 1 MiB.
    line: int = mark.line + 1
    column: int = mark.column + 1
    return line << 21 | column


def _unpack(packed: int) -> tuple[int, int]:
    return packed >> 21, packed & 0x1FFFFF


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

    __slots__ = ("anchor", "container", "is_map", "key", "key_pos", "number", "part", "size")

    def __init__(self, container: Any, number: int, part: str | int | None, anchor: str | None) -> None:
        self.container = container
        self.is_map = isinstance(container, dict)
        self.number = number  # the container's number in YamlDocument.containers
        self.part = part  # its key or index in its parent (None: the document itself)
        self.anchor = anchor
        self.key: str | None = None  # mapping: the key waiting for its value
        self.key_pos = 0
        self.size = 1

    def next_part(self) -> str | int | None:
        """The key or index of the next value placed here (None: a dropped duplicate)."""
        if not self.is_map:
            return len(self.container)
        return None if self.key is _DROPPED else self.key


class _Builder:
    def __init__(self, file: str, data: bytes) -> None:
        self.file = file
        self.data = data
        self.documents: list[YamlDocument] = []
        self.diagnostics: list[Diagnostic] = []
        self.stack: list[_Frame] = []

    def human_path(self, *extra: str | int | None) -> str:
        """The field path of the stack (plus ``extra``), for messages: ``spec.addresses[0]``."""
        parts = [f.part for f in self.stack[1:]] + list(extra)
        return format_path(tuple(p for p in parts if p is not None))

    def diag(self, mark: Any, message: str, path: str = "") -> None:
        self.diagnostics.append(Diagnostic(self.file, mark.line + 1, mark.column + 1, message, path))

    def fatal(self, mark: Any, message: str, with_path: bool = True) -> YamlFileError:
        path = self.human_path() if with_path else ""
        return YamlFileError(Diagnostic(self.file, mark.line + 1, mark.column + 1, message, path))

    def run(self) -> None:
        next_event, dispose = _event_source(self.data)
        try:
            self.build(next_event)
        finally:
            dispose()

    def build(self, next_event: Callable[[], Any]) -> None:
        stack = self.stack
        anchors: dict[str, tuple[Any, int, int | None]] = {}  # name -> (value, nodes, container)
        doc = YamlDocument(None, 1, 1)
        expanded = 0  # nodes added to the current document by aliases
        numbers = 0  # containers numbered so far in the current document
        while (event := next_event()) is not None:
            kind = type(event)
            if kind is ScalarEvent:
                top = stack[-1] if stack else None
                if top is not None and top.is_map and top.key is None:
                    self.take_key(top, event, doc)  # the commonest event: a key of a mapping
                    continue
                value = self.scalar(event, top)
                if event.anchor:
                    anchors[event.anchor] = (value, 1, None)
                self.place(top, value, 1, _pack(event.start_mark), doc)
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                self.check_tag(event, "map" if kind is MappingStartEvent else "seq")
                top = stack[-1] if stack else None
                if top is not None and top.is_map and top.key is None:
                    raise self.fatal(event.start_mark, "a mapping key must be a plain string, not a "
                                     "mapping or a list")
                if len(stack) >= MAX_DEPTH:
                    raise self.fatal(event.start_mark, f"mappings and lists nest deeper than {MAX_DEPTH} "
                                     "levels; refusing", with_path=False)
                part = top.next_part() if top is not None else None
                frame = _Frame({} if kind is MappingStartEvent else [], numbers, part, event.anchor)
                numbers += 1
                if top is None or part is not None:
                    slot = _slot(top.number, part) if top is not None and part is not None else ""
                    doc.positions[slot] = _pack(event.start_mark)
                    doc.containers[slot] = frame.number
                stack.append(frame)
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                frame = stack.pop()
                if frame.anchor:
                    anchors[frame.anchor] = (frame.container, frame.size, frame.number)
                self.place(stack[-1] if stack else None, frame.container, frame.size, 0, doc)
            elif kind is AliasEvent:
                top = stack[-1] if stack else None
                if event.anchor not in anchors:
                    raise self.fatal(event.start_mark, f"alias *{event.anchor} refers to no anchor "
                                     "defined before it (recursive or undefined anchors are not allowed)")
                value, size, number = anchors[event.anchor]
                expanded += size
                if expanded > ALIAS_EXPANSION_LIMIT:
                    raise self.fatal(event.start_mark, "aliases expand to more than "
                                     f"{ALIAS_EXPANSION_LIMIT} nodes in this document; refusing "
                                     "(is this a billion-laughs attack?)")
                if top is not None and top.is_map and top.key is None:
                    raise self.fatal(event.start_mark, "a mapping key must be a plain string, not an alias")
                part = top.next_part() if top is not None else None
                if number is not None and top is not None and part is not None:
                    # Fields inside an alias are found where the anchor wrote them.
                    doc.containers[_slot(top.number, part)] = number
                self.place(top, value, size, _pack(event.start_mark), doc)
            elif kind is DocumentStartEvent:
                doc = YamlDocument(None, event.start_mark.line + 1, event.start_mark.column + 1)
                anchors, expanded, numbers = {}, 0, 0
            elif kind is DocumentEndEvent:
                self.documents.append(doc)

    def take_key(self, frame: _Frame, event: Any, doc: YamlDocument) -> None:
        key = event.value
        if event.tag is not None and event.tag != "!":
            self.check_tag(event, "scalar")
        if key == "<<" and event.implicit[0]:
            self.diag(event.start_mark, "merge keys (<<) are not supported; write the fields out",
                      self.human_path())
            frame.key = _DROPPED
        elif key in frame.container:
            line, col = _unpack(doc.key_positions[_slot(frame.number, key)])
            self.diag(event.start_mark, f'duplicate key "{key}" (first defined at line {line}, column {col})',
                      self.human_path(key))
            frame.key = _DROPPED  # the value that follows is dropped: the first definition wins
        else:
            frame.key = key
            frame.key_pos = _pack(event.start_mark)

    def place(self, frame: _Frame | None, value: Any, size: int, position: int, doc: YamlDocument) -> None:
        """Put a finished value into its parent; ``position`` 0: already recorded at its start."""
        if frame is None:
            doc.value = value
            if position:
                doc.positions[""] = position
            return
        frame.size += size
        container = frame.container
        if not frame.is_map:
            if position:
                doc.positions[f"{frame.number}[{len(container)}]"] = position
            container.append(value)
            return
        key = frame.key
        frame.key = None
        if key is _DROPPED or key is None:
            return
        slot = f"{frame.number}.{key}"
        doc.key_positions[slot] = frame.key_pos
        if position:
            doc.positions[slot] = position
        container[key] = value

    def scalar(self, event: Any, frame: _Frame | None) -> Any:
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
            part = frame.next_part() if frame is not None else None
            self.diag(event.start_mark, f"{text!r} is not a valid {tag.removeprefix(_TAG)}",
                      self.human_path(part))
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
        return [], [_tab_diagnostic(file, data, exc) or _syntax_diagnostic(file, exc)]
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


def _tab_diagnostic(file: str, data: bytes, exc: MarkedYAMLError) -> Diagnostic | None:
    """The parser's words for a tab ("found character that cannot start any token") never say
    "tab": when a tab at the error's line is the cause, say so and point at it."""
    mark = exc.problem_mark
    if mark is None:
        return None
    lines = data.split(b"\n", mark.line + 1)
    if mark.line >= len(lines):
        return None
    text = lines[mark.line].decode("utf-8", errors="replace").rstrip("\r")
    indent = len(text) - len(text.lstrip(" \t"))
    if "\t" in text[:indent]:
        col = text.index("\t") + 1
        return Diagnostic(file, mark.line + 1, col, "a tab in the indentation: YAML indents with spaces only; "
                          "replace the tab with spaces")
    if text[mark.column:mark.column + 1] == "\t":
        return Diagnostic(file, mark.line + 1, mark.column + 1, "a tab where YAML needs a space (tabs can "
                          "neither indent nor separate YAML structure); replace the tab with spaces")
    return None


def offset_position(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and column (in characters) of a byte offset."""
    before = data[:offset]
    line = before.count(b"\n") + 1
    last = before.rfind(b"\n")
    col = len(before[last + 1:].decode("utf-8", errors="replace")) + 1
    return line, col


def format_path(path: FieldPath) -> str:
    """``("spec", "addresses", 0)`` -> ``spec.addresses[0]``; odd keys are quoted: ``labels["a.b/c"]``."""
    out = ""
    for part in path:
        out = f"{out}[{part}]" if isinstance(part, int) else _join(out, part)
    return out


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_/-]+")
_PATH_PART = re.compile(r'\.?([A-Za-z0-9_/-]+)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')


def _join(path: str, key: str) -> str:
    if not _PLAIN_KEY.fullmatch(key):
        return f"{path}[{json.dumps(key)}]"
    return f"{path}.{key}" if path else key


def parse_path(text: str) -> FieldPath:
    """``spec.addresses[0]`` -> ``("spec", "addresses", 0)``; the inverse of :func:`format_path`."""
    parts: list[str | int] = []
    for name, index, quoted in _PATH_PART.findall(text):
        parts.append(name if name else int(index) if index else json.loads(quoted))
    return tuple(parts)
