"""Any YAML through libyaml: plain Python values, with the line and column of every field.

:func:`reconciler.desired.yamlsource.parse_yaml` reads everyday block YAML itself (the fast path,
:mod:`reconciler.desired.yamlfast`) and hands every other file to this module, which is imported
only then: PyYAML costs a process about 15 ms to import.

libyaml (through PyYAML's C extension) parses and composes each document into nodes; this module
builds plain dicts, lists and scalars from the nodes itself instead of using a constructor,
because:

- no tag ever constructs an object: only the standard YAML tags are accepted, anything else
  (``!!python/object``, ``!foo``) is an error;
- duplicate keys, merge keys and anchors that expand into millions of nodes ("billion laughs")
  are refused while building, before anything else sees the value;
- every node's position is recorded, so an error found much later (by pydantic, or by a
  cross-document rule) still points at ``file:line:col``;
- it is several times faster than a constructor and a resolver, which matters for repos with
  thousands of documents.

Plain scalars are resolved with the YAML 1.2 core schema (not PyYAML's YAML 1.1 one):
``yes``/``no``/``on``/``off`` are strings, not booleans, ``0777`` is 777 and ``1:30`` a string.

libyaml's composer is fast but knows nothing of aliases' own positions, redefined anchors or a
nesting limit (it recurses in C, so a file of 200,000 nested "[" would crash the process). A file
that may hold any of those, or that the composer refuses, is composed from parser events here
instead (:func:`_event_composed`), as is every file when libyaml is missing: one builder, two
sources of nodes.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from yaml import SafeLoader
from yaml.error import MarkedYAMLError, YAMLError
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from reconciler.common.errors import Diagnostic
from reconciler.desired.yamldoc import (
    MAX_DEPTH,
    YamlDocument,
    index_of,
    resolve_plain,
    unpack_position,
)
from reconciler.desired.yamlsource import format_path, offset_position

try:  # PyYAML's binding of libyaml: ~10x faster than its pure-Python parser.
    from yaml._yaml import CParser
except ImportError:  # pragma: no cover - depends on the installation
    CParser = None

USING_LIBYAML: bool = CParser is not None

# How many nodes aliases may add to one document when expanded. Real manifests use a few
# anchors for shared selectors; a billion-laughs document needs millions.
ALIAS_EXPANSION_LIMIT = 10_000
# libyaml's composer recurses in C once per level of nesting, with about 400 bytes of stack each:
# 20,000 levels fit glibc's 8 MiB stack (a thread's too, on Debian), 200,000 crash the process.
# Files that might nest deeper than this are composed from events here.
_C_COMPOSER_DEPTH = 5_000
# A "---" line, as libyaml sees it (a line break other than \n only makes fewer, larger parts).
_DOCUMENT_START = re.compile(rb"\n---(?=[ \t\r\n]|\Z)")


_TAG = "tag:yaml.org,2002:"
_STR = _TAG + "str"  # also the tag the composers give a quoted (or block) scalar without one
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}
_TAG_TYPES: dict[str, type | tuple[type, ...]] = {
    _TAG + "int": int, _TAG + "float": (int, float), _TAG + "bool": bool, _TAG + "null": type(None),
}
# A chain of field parts, innermost last: (parent chain, key or index), None at the top. Parts
# that are None (a dropped duplicate, the document itself) are left out of messages.
_Chain = tuple[Any, str | int | None] | None



class YamlFileError(Exception):
    """The file cannot be read as YAML at all; carries the first fatal diagnostic."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(str(diagnostic))
        self.diagnostic = diagnostic



# --- sources of nodes --------------------------------------------------------------------------
#
# Both give yaml.nodes objects whose tag is None for a scalar to resolve as plain (and for a
# mapping or list without a tag), _STR for a quoted one, or the tag written in the file.


class _Alias:
    """An alias, as the event composer keeps it: where it stands and the node it refers to."""

    __slots__ = ("anchor", "start_mark", "target")

    def __init__(self, anchor: str, target: Any, start_mark: Any) -> None:
        self.anchor = anchor
        self.target = target  # None: no anchor of that name was complete before the alias
        self.start_mark = start_mark


@dataclass
class _Composed:
    """One document's nodes; ``error``: what stopped it (only its nodes before that are here)."""

    root: Any
    anchored: set[int] = field(default_factory=set)  # ids of the nodes aliases may refer to
    error: Exception | None = None


class _DepthRefused(Exception):
    def __init__(self, mark: Any) -> None:
        super().__init__("nesting limit")
        self.mark = mark


_CComposer: Any = None
if CParser is not None:
    class _CComposer(CParser):  # type: ignore[no-redef,misc]
        """libyaml's composer, minus PyYAML's YAML 1.1 resolver: the builder resolves scalars."""

        def descend_resolver(self, parent: Any, index: Any) -> None:
            pass

        def ascend_resolver(self) -> None:
            pass

        def resolve(self, kind: Any, value: Any, implicit: Any) -> str | None:
            return _STR if kind is ScalarNode and not implicit[0] else None


def _c_composed(data: bytes) -> Iterator[_Composed]:
    """Documents composed by libyaml; raises the parser's (or composer's) errors."""
    composer = _CComposer(data)
    try:
        while composer.check_node():
            yield _Composed(composer.get_node())
    finally:
        composer.dispose()


def _may_nest_deep(data: bytes) -> bool:
    """Whether ``data`` might nest deeper than libyaml's composer can safely recurse.

    A block collection inside another starts further right, but for a list that is a mapping's
    value, so block nesting is at most twice the longest line; flow nesting needs a "[" or "{"
    in the same document (a "---" line ends every collection: inside one, it is an error).
    """
    if len(data) <= _C_COMPOSER_DEPTH // 2:
        return False
    longest = max(map(len, data.split(b"\n")))
    flow = max(part.count(b"[") + part.count(b"{") for part in _DOCUMENT_START.split(data))
    return flow + 2 * (longest + 1) > _C_COMPOSER_DEPTH


# An anchor ("&name") starts a node: it follows a blank, a line break (libyaml also breaks lines at
# NEL, LS and PS, whose UTF-8 ends in 0x85, 0xA8, 0xA9), a BOM (ends in 0xBF), a flow indicator, an
# indicator such as ":" or "-", or nothing. Any other "&" ("?a=1&b=2") is text. Over-matching
# costs only speed; missing an anchor would let the composer expand aliases unchecked.
_ANCHOR = re.compile(rb"(?<![^\s\[\]{},:?!\-\x85\xa8\xa9\xbf])&")


def _may_hold_anchors(data: bytes) -> bool:
    return b"&" in data and _ANCHOR.search(data) is not None


def _event_source(data: bytes) -> tuple[Callable[[], Any], Callable[[], None]]:
    """(next event, dispose): libyaml's parser, or PyYAML's pure-Python one without libyaml."""
    if CParser is not None:
        parser = CParser(data)
        return parser.get_event, parser.dispose
    loader = SafeLoader(data)
    return loader.get_event, loader.dispose


def _event_composed(data: bytes) -> Iterator[_Composed]:
    """Documents composed from parser events; never raises: an error ends the last document.

    Aliases stay _Alias nodes (with their own position); an anchor counts once its node is
    complete, and a later one of the same name replaces it. A collection nested deeper than
    MAX_DEPTH ends the document there, so a hostile file costs no more than its first levels.
    """
    next_event, dispose = _event_source(data)
    stack: list[Any] = []  # open collections
    names: list[str | None] = []  # their anchors
    keys: list[Any] = []  # per open collection: a mapping's key waiting for its value
    anchors: dict[str, Any] = {}
    doc = _Composed(None)

    def attach(node: Any) -> bool:
        """Put ``node`` into the open collection; whether it is a mapping's key."""
        if not stack:
            doc.root = node
            return False
        parent = stack[-1]
        if type(parent) is SequenceNode:
            parent.value.append(node)
            return False
        if keys[-1] is None:
            keys[-1] = node
            return True
        parent.value.append((keys[-1], node))
        keys[-1] = None
        return False

    try:
        while True:
            try:
                event = next_event()
            except YAMLError as exc:
                doc.error = exc
                yield _link_pending_keys(doc, stack, keys)
                return
            kind = type(event)
            if kind is ScalarEvent:
                tag = event.tag
                if tag is None or tag == "!":
                    tag = None if event.implicit[0] else _STR
                node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
                if not attach(node) and event.anchor:  # an anchor on a key is never registered
                    anchors[event.anchor] = node
                    doc.anchored.add(id(node))
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                tag = None if event.tag == "!" else event.tag
                node = (MappingNode if kind is MappingStartEvent else SequenceNode)(
                    tag, [], event.start_mark, None, event.flow_style)
                attach(node)
                if len(stack) >= MAX_DEPTH:
                    doc.error = _DepthRefused(event.start_mark)
                    yield _link_pending_keys(doc, stack, keys)
                    return
                stack.append(node)
                names.append(event.anchor)
                keys.append(None)
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                node = stack.pop()
                keys.pop()
                name = names.pop()
                if name:
                    anchors[name] = node
                    doc.anchored.add(id(node))
            elif kind is AliasEvent:
                attach(_Alias(event.anchor, anchors.get(event.anchor), event.start_mark))
            elif kind is DocumentStartEvent:
                doc = _Composed(None)
                anchors = {}
            elif kind is DocumentEndEvent:
                yield doc
            elif kind is StreamEndEvent or event is None:
                return
    finally:
        dispose()


def _link_pending_keys(doc: _Composed, stack: list[Any], keys: list[Any]) -> _Composed:
    """A document cut short: the keys still waiting for their value are checked like the others."""
    for collection, key in zip(stack, keys, strict=True):
        if key is not None:
            collection.value.append((key, ScalarNode(None, "", key.start_mark, key.start_mark)))
    return doc


# --- nodes -> values ---------------------------------------------------------------------------


class _Builder:
    """Plain values and positions from composed nodes, checking every rule on the way.

    Nodes are visited in the order they were written, so the first fatal problem found is the
    first in the file, whichever source composed the nodes.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.documents: list[YamlDocument] = []
        self.diagnostics: list[Diagnostic] = []
        self.marks: list[int] = []
        self.anchored: set[int] = set()
        self.built: dict[int, tuple[Any, int, int]] = {}  # id of an anchored collection -> result
        self.expanded = 0  # nodes added to the current document by aliases
        # Every key once per file: libyaml gives each occurrence its own copy of "apiVersion".
        self.names: dict[str, str] = {}

    def build(self, composed: Iterator[_Composed]) -> None:
        for doc in composed:
            self.marks, self.anchored, self.built, self.expanded = [], doc.anchored, {}, 0
            root = doc.root
            if root is not None:  # checked even when cut short: its problems come first
                value, _, block = self.child(root, 0, None, None)
            if doc.error is not None:
                error = doc.error
                if isinstance(error, _DepthRefused):  # pragma: no cover - the node raised it already
                    raise self.depth_refused(error.mark)
                raise error
            if root is not None:
                mark = root.start_mark
                self.documents.append(YamlDocument(value, mark.line + 1, mark.column + 1,
                                                   array("q", self.marks), block))

    def human_path(self, chain: _Chain, *extra: str | int | None) -> str:
        """The field path of ``chain`` (plus ``extra``), for messages: ``spec.addresses[0]``."""
        parts: list[str | int | None] = list(extra)
        while chain is not None:
            chain, part = chain
            parts.insert(0, part)
        return format_path(tuple(p for p in parts if p is not None))

    def diag(self, mark: Any, message: str, path: str = "") -> None:
        self.diagnostics.append(Diagnostic(self.file, mark.line + 1, mark.column + 1, message, path))

    def fatal(self, mark: Any, message: str, chain: _Chain) -> YamlFileError:
        return YamlFileError(Diagnostic(self.file, mark.line + 1, mark.column + 1, message,
                                        self.human_path(chain)))

    def depth_refused(self, mark: Any) -> YamlFileError:
        return YamlFileError(Diagnostic(self.file, mark.line + 1, mark.column + 1, "mappings and lists "
                                        f"nest deeper than {MAX_DEPTH} levels; refusing", ""))

    def child(self, node: Any, depth: int, chain: _Chain, part: str | int | None) -> tuple[Any, int, int]:
        """(value, size in nodes, block in marks) of ``node``, ``depth`` collections deep;
        ``chain``: the path of its parent, ``part``: its key or index there (for messages)."""
        kind = type(node)
        if kind is ScalarNode:
            return self.scalar(node, chain, part), 1, -1
        if kind is _Alias:
            return self.alias(node, chain)
        self.check_tag(node, _TAG + ("map" if kind is MappingNode else "seq"), chain)
        if depth >= MAX_DEPTH:
            raise self.depth_refused(node.start_mark)
        if kind is MappingNode:
            result = self.mapping(node, depth + 1, (chain, part))
        else:
            result = self.sequence(node, depth + 1, (chain, part))
        if self.anchored and id(node) in self.anchored:
            self.built[id(node)] = result
        return result

    def mapping(self, node: Any, depth: int, chain: _Chain) -> tuple[Any, int, int]:
        pairs = node.value
        marks = self.marks
        names = self.names
        block = slot = len(marks)
        marks += [0] * (3 * len(pairs))
        result: dict[str, Any] = {}
        size = 1
        for key_node, value_node in pairs:
            if type(key_node) is not ScalarNode:
                raise self.refuse_key(key_node, chain)
            key = key_node.value
            key = names.setdefault(key, key)
            key_tag = key_node.tag
            if key_tag is not None and key_tag not in _SCALAR_TAGS:
                raise self.bad_tag(key_node, chain)
            part: str | None = key
            if key == "<<" and key_tag is None:
                self.diag(key_node.start_mark, "merge keys (<<) are not supported; write the fields out",
                          self.human_path(chain))
                part = None
            elif key in result:
                line, col = unpack_position(marks[block + 3 * index_of(result, key)])
                self.diag(key_node.start_mark, f'duplicate key "{key}" (first defined at line {line}, '
                          f"column {col})", self.human_path(chain, key))
                part = None  # the value that follows is dropped: the first definition wins
            if type(value_node) is ScalarNode:
                value = self.scalar(value_node, chain, part)
                size += 1
                inner = -1
            else:
                value, count, inner = self.child(value_node, depth, chain, part)
                size += count
            if part is not None:
                result[key] = value
                mark = key_node.start_mark
                marks[slot] = (mark.line + 1) << 21 | (mark.column + 1)
                mark = value_node.start_mark
                marks[slot + 1] = (mark.line + 1) << 21 | (mark.column + 1)
                marks[slot + 2] = inner
                slot += 3
        return result, size, block

    def sequence(self, node: Any, depth: int, chain: _Chain) -> tuple[Any, int, int]:
        items = node.value
        marks = self.marks
        block = slot = len(marks)
        marks += [0] * (2 * len(items))
        result: list[Any] = []
        size = 1
        for item in items:
            if type(item) is ScalarNode:
                value = self.scalar(item, chain, len(result))
                size += 1
                inner = -1
            else:
                value, count, inner = self.child(item, depth, chain, len(result))
                size += count
            result.append(value)
            mark = item.start_mark
            marks[slot] = (mark.line + 1) << 21 | (mark.column + 1)
            marks[slot + 1] = inner
            slot += 2
        return result, size, block

    def refuse_key(self, node: Any, chain: _Chain) -> YamlFileError:
        """The error for a mapping or an alias written as a mapping's key."""
        if type(node) is _Alias:
            self.alias(node, chain)
            return self.fatal(node.start_mark, "a mapping key must be a plain string, not an alias", chain)
        self.check_tag(node, _TAG + ("map" if type(node) is MappingNode else "seq"), chain)
        return self.fatal(node.start_mark, "a mapping key must be a plain string, not a mapping or a list", chain)

    def alias(self, node: _Alias, chain: _Chain) -> tuple[Any, int, int]:
        target = node.target
        if target is None:
            raise self.fatal(node.start_mark, f"alias *{node.anchor} refers to no anchor defined before it "
                             "(recursive or undefined anchors are not allowed)", chain)
        if type(target) is ScalarNode:
            result: tuple[Any, int, int] = (_scalar_value(target), 1, -1)
        else:
            result = self.built[id(target)]
        self.expanded += result[1]
        if self.expanded > ALIAS_EXPANSION_LIMIT:
            raise self.fatal(node.start_mark, f"aliases expand to more than {ALIAS_EXPANSION_LIMIT} nodes in "
                             "this document; refusing (is this a billion-laughs attack?)", chain)
        return result

    def scalar(self, node: Any, chain: _Chain, part: str | int | None) -> Any:
        tag = node.tag
        if tag is None:
            return resolve_plain(node.value)
        if tag == _STR:
            return node.value
        return self.tagged(node, chain, part)

    def tagged(self, node: Any, chain: _Chain, part: str | int | None) -> Any:
        """A scalar with an explicit tag other than !!str: allowed, and its value of that type."""
        tag: str = node.tag
        if tag not in _SCALAR_TAGS:
            raise self.bad_tag(node, chain)
        text: str = node.value
        value = resolve_plain(text)
        expected = _TAG_TYPES.get(tag)
        if expected is not None and (not isinstance(value, expected)
                                     or (expected is int and isinstance(value, bool))):
            self.diag(node.start_mark, f"{text!r} is not a valid {tag.removeprefix(_TAG)}",
                      self.human_path(chain, part))
        return value

    def check_tag(self, node: Any, allowed: str, chain: _Chain) -> None:
        if node.tag is not None and node.tag != allowed:
            raise self.bad_tag(node, chain)

    def bad_tag(self, node: Any, chain: _Chain) -> YamlFileError:
        tag: str = node.tag
        shown = "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag
        return self.fatal(node.start_mark, f"tag {shown} is not allowed: only the standard tags "
                          "!!str, !!int, !!float, !!bool, !!null, !!map and !!seq are", chain)


def _scalar_value(node: Any) -> Any:
    """The value of a scalar already checked once (an alias to it repeats no message)."""
    return node.value if node.tag == _STR else resolve_plain(node.value)


def parse_yaml_with_libyaml(data: bytes, file: str) -> tuple[list[YamlDocument], list[Diagnostic]]:
    """:func:`parse_yaml` without its fast path: any YAML, with the first syntax error exactly."""
    if _CComposer is not None and not _may_hold_anchors(data) and not _may_nest_deep(data):
        builder = _Builder(file)
        try:
            builder.build(_c_composed(data))
        except YamlFileError as exc:
            return [], [exc.diagnostic]
        except YAMLError:
            pass  # composed again from events below, which tell the first problem exactly
        else:
            return builder.documents, builder.diagnostics
    builder = _Builder(file)
    try:
        builder.build(_event_composed(data))
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
    if "maximum nesting depth" in (exc.problem or ""):
        # libyaml from 0.2.6 on stops at its own depth (1,000) while scanning ahead, before the
        # events of our MAX_DEPTH arrive: the same refusal, in the same words, whichever libyaml.
        line = mark.line + 1 if mark is not None else 1
        return Diagnostic(file, line, 1, f"mappings and lists nest deeper than {MAX_DEPTH} levels; refusing")
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
