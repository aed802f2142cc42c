"""A fast path for the everyday subset of block YAML: file text -> the same documents as libyaml.

libyaml's composer makes a Python node and two marks per node, and the builder in
:mod:`reconciler.desired.yamlsource` walks those nodes again: most of the time a large repo takes
to load. Real repos hold a small, regular part of YAML, which this module reads straight from the
text. A line means the same wherever it stands (only its line number and the collections around
it differ), and most lines of a big repo are repeated (``kind: ServiceExposure``, ``spec:``,
``  - {name: http, port: 80}``): each distinct line is split once, by one compiled expression,
into indentation, dash, key and value, with its scalars resolved and its columns counted; one
loop over the lines then builds the values and the marks.

The result must be exactly what the libyaml path gives (values of the same types, the same
positions, the same ``marks`` layout), so anything outside the subset declines the whole file
(:func:`fast_documents` returns None) and the libyaml path reads it, with its own diagnostics.
The subset: block mappings and lists indented with spaces (lists also at their key's
indentation), ``---`` and ``...``, comments, blank lines, one-line plain, single- and
double-quoted scalars, and one-line flow lists and mappings of those. Declined: tabs, carriage
returns, byte order marks, control characters, directives, anchors, aliases, tags, block
scalars, scalars over several lines, complex keys, merge keys, duplicate keys (the libyaml path
reports them), unknown escapes, and any line the expression does not take whole. Scalars and
flow collections are read by :mod:`reconciler.desired.yamlflow`.
tests/test_yaml_fastpath.py checks the two paths against each other on many thousands of files.
"""

from __future__ import annotations

import re
from array import array
from operator import itemgetter
from typing import Any

from reconciler.desired.yamldoc import MAYBE_NOT_STR, YamlDocument, resolve_plain
from reconciler.desired.yamlflow import (
    ANY,
    DOUBLE_QUOTED,
    LONGEST_KEY,
    REFUSED,
    SINGLE_QUOTED,
    Declined,
    FlowParser,
    FlowTemplate,
    copy_value,
    mapping_key,
    scalar,
    structure,
)

# A plain scalar on one line, in block context (YAML 1.2 ns-plain-one-line, as libyaml scans it):
# it cannot start with an indicator ("-" only when a non-space follows), ": " and " #" end it,
# and trailing spaces are not part of it. "?" and ":" may start one too; those are left to libyaml.
_PLAIN = (rf"""(?:[^-?:,\[\]{{}}\#&*!|>'"%@`\ {REFUSED}]|-(?=[^\ {REFUSED}]))"""
          rf"""(?:[^:\ {REFUSED}]++|:(?=[^\ {REFUSED}])|\ ++(?=[^\ \#:{REFUSED}]|:[^\ {REFUSED}]))*""")
# One line of block YAML: (document marker, indentation, list dash, key, ":" and the spaces after
# it, value); a flow collection's value runs to the end of the line (comment included).
_LINE = re.compile(rf"""
    (---|\.\.\.)(?:\ +(?:\#{ANY}*)?)?
    |
    (?!(?:---|\.\.\.)(?:\ |$))
    (\ *+)
    (-(?:\ ++|$))?
    (?:({_PLAIN}|{SINGLE_QUOTED}|{DOUBLE_QUOTED})(:(?:\ ++|$)))?
    ({_PLAIN}|{SINGLE_QUOTED}|{DOUBLE_QUOTED}|[\[{{]{ANY}*)?
    \ *(?:(?<![^\ ])\#{ANY}*)?
    """, re.VERBOSE)

# The commonest line, "key: value" (perhaps after "- "), with nothing _LINE must look into.
_SIMPLE_ENTRY = re.compile(r"(\ *)(-\ )?([A-Za-z0-9_][A-Za-z0-9_./-]*):\ ([A-Za-z0-9_./][A-Za-z0-9_./-]*)")

# Well below MAX_DEPTH (64), where the libyaml path refuses a document with its own message.
_DEEPEST_BLOCK = 32

# What a line holds, the first field of its digest.
_BLANK, _START, _END = 0, 1, 2  # nothing (or a comment); "---"; "..."
_ENTRY, _ENTRY_FLOW, _ENTRY_EMPTY = 3, 4, 5  # "key: scalar", "key: [flow]", "key:"
_ITEM, _ITEM_FLOW, _ITEM_EMPTY = 6, 7, 8  # "- scalar", "- [flow]", "-"
_ITEM_ENTRY = 9  # 9, 10, 11: "- " and one of the three entries: a mapping as the item
_SCALAR, _FLOW = 12, 13  # a line of only a scalar or a flow collection: a document's root
# (kind, indentation, key, value or flow template, column of the key, column of the value,
# layout): the columns are 1-based; an empty value's column is where libyaml puts the null it
# stands for; the layout numbers everything but the scalar (0, 1, 2 for the first three kinds).
_Digest = tuple[int, int, Any, Any, int, int, int]
_LAYOUT = itemgetter(6)
_BLANK_LINE: _Digest = (_BLANK, 0, None, None, 0, 0, _BLANK)
_LINE_STEP = 1 << 21  # a mark is line << 21 | column
_COLUMNS = _LINE_STEP - 1
# Compiled document shapes per file, at most (a file of hand-written documents has no repeats),
# and the longest document compiled: generated ones are short, and a builder's source grows with it.
_SHAPES = 256
_SHAPE_LINES = 400


def fast_documents(data: bytes) -> list[YamlDocument] | None:
    """The documents of one file read by the fast path, or None when it declines the file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        return _Reader().read(text.split("\n"))
    except Declined:
        return None


class _Leaf:
    """While a shape is compiled: the value of line ``index`` of the document, as the digest has it."""

    __slots__ = ("index", "value")

    def __init__(self, index: int, value: Any) -> None:
        self.index = index
        self.value = value


class _Shape:
    """A document's layout, compiled: every document of that layout is built without reading
    its lines one by one again. The builder's source holds only line numbers and names of this
    module (no text of the file); keys come in as a tuple.

    ``marks`` are the document's marks as if it started on line 1: every document of the shape
    shares them, with its own ``shift`` (see :class:`YamlDocument`).
    """

    __slots__ = ("block", "build", "keys", "marks", "root_mark", "skeleton")

    def __init__(self, tree: Any, root_mark: int, marks: array[int], block: int) -> None:
        keys: list[str] = []
        source = f"def build(d, k):\n    return {_expression(tree, keys)}\n"
        namespace: dict[str, Any] = {"_dict": dict, "_list": list, "_copy": copy_value}
        exec(compile(source, "<yaml document shape>", "exec"), namespace)
        self.build: Any = namespace["build"]
        self.keys = tuple(keys)
        self.skeleton = _skeleton(tree)
        self.root_mark = root_mark
        self.marks = marks  # shared by every document of the shape (their ``shift`` differs)
        self.block = block

    def document(self, digests: list[_Digest], base: int) -> YamlDocument:
        """The document of this shape whose lines are ``digests``, its first line after ``base``."""
        return _ShapedDocument(self, digests, base)


class _ShapedDocument(YamlDocument):
    """A document of a compiled shape: its value is built each time it is asked for.

    The loader asks once, to validate it; what it keeps afterwards (for positions) is then a list
    of the lines' digests, which other documents share, rather than the document's dicts and
    lists: a large repo's transient memory shrinks by about a kilobyte per document.
    """

    __slots__ = ("digests", "shape")

    def __init__(self, shape: _Shape, digests: list[_Digest], base: int) -> None:
        root_mark = shape.root_mark + base
        super().__init__(None, root_mark >> 21, root_mark & _COLUMNS, shape.marks, shape.block, base)
        self.shape = shape
        self.digests = digests

    @property
    def value(self) -> Any:
        return self.shape.build(self.digests, self.shape.keys)

    def _layout(self) -> Any:
        return self.shape.skeleton


def _skeleton(tree: Any) -> Any:
    """A shape's tree with what positions need: every key and list item, flow collections too."""
    if type(tree) is dict:
        return {key: _skeleton(item) for key, item in tree.items()}
    if type(tree) is list:
        return [_skeleton(item) for item in tree]
    if type(tree) is _Leaf and type(tree.value) is FlowTemplate:
        return tree.value.value
    return None


def _expression(value: Any, keys: list[str]) -> str:
    """Python source that builds ``value`` (a tree of _Leaf) from a document's digests ``d``."""
    kind = type(value)
    if kind is dict:
        parts = []
        for key, item in value.items():
            keys.append(key)
            parts.append(f"k[{len(keys) - 1}]: {_expression(item, keys)}")
        return "{" + ", ".join(parts) + "}"
    if kind is list:
        return "[" + ", ".join(_expression(item, keys) for item in value) + "]"
    if value is None:  # a key or item with nothing after it
        return "None"
    assert kind is _Leaf
    here = f"d[{value.index}][3]"
    template = value.value
    if type(template) is not FlowTemplate:
        return here
    if template.links:
        return f"_copy({here}.value)"
    return f"_dict({here}.value)" if type(template.value) is dict else f"_list({here}.value)"


class _Reader:
    """The documents of one file.

    Marks are laid out as the libyaml path lays them out: every collection's block in the order
    the collections open (each before those nested in it). A block's size is known only when its
    collection ends, so each collection fills its own list of slots, and when the document ends
    the lists are joined and the slots that hold a nested block's number are filled in.

    Generated files repeat one layout thousands of times. A document is identified by its lines'
    layouts (everything but their scalars); the second time a layout comes, it is compiled
    (:class:`_Shape`), and its later documents cost a call each.
    """

    def __init__(self) -> None:
        self.documents: list[YamlDocument] = []
        self.names: dict[str, str] = {}  # every key once per file, as the libyaml path keeps them
        self.digests: dict[str, _Digest] = {}
        # a line's layout (all of its digest but the scalar) -> its number in ``shapes``' keys
        self.layouts: dict[Any, int] = {_BLANK: _BLANK, _START: _START, _END: _END}
        # a document's layouts -> how often seen, then its compiled shape
        self.shapes: dict[tuple[int, ...], int | _Shape] = {}

    def digest(self, line: str) -> _Digest:
        """What ``line`` holds, wherever it stands."""
        simple = _SIMPLE_ENTRY.fullmatch(line)
        found = self.simple_entry(simple) if simple is not None else self.any_line(line)
        self.digests[line] = found
        return found

    def simple_entry(self, match: re.Match[str]) -> _Digest:
        """What :meth:`any_line` finds in a line ``_SIMPLE_ENTRY`` takes, at a third of the cost."""
        spaces, dash, key, text = match.groups()
        col = len(spaces)
        at = col + 2 if dash else col
        if len(key) > LONGEST_KEY:
            raise Declined
        name = self.names.setdefault(key, key)
        kind = _ITEM_ENTRY if dash else _ENTRY
        value_col = at + len(key) + 3
        number = self.layouts.setdefault((kind, col, name, at + 1, value_col, None), len(self.layouts))
        return kind, col, name, resolve_plain(text) if text[0] in MAYBE_NOT_STR else text, at + 1, value_col, number

    def any_line(self, line: str) -> _Digest:
        match = _LINE.fullmatch(line)
        if match is None:
            raise Declined
        marker, spaces, dash, key, separator, text = match.groups()
        if marker is not None:
            kind = _START if marker == "---" else _END
            found: _Digest = (kind, 0, None, None, 0, 0, kind)
        elif dash is None and key is None and text is None:
            found = _BLANK_LINE
        else:
            col = len(spaces)
            at = col + len(dash) if dash is not None else col  # where the node after the dash starts
            name: str | None = None
            if key is not None:
                name = mapping_key(key, {}, self.names)
                value_col = at + len(key) + len(separator)
                kind = _ENTRY if dash is None else _ITEM_ENTRY
            else:
                value_col = at
                kind = _ITEM if dash is not None else _SCALAR
            value: Any = None
            layout: Any = None
            if text is None:  # libyaml's null stands right after the ":" or the "-"
                kind += 2
                value_col = at + len(key) + 1 if key is not None else col + 1
            elif text[0] == "[" or text[0] == "{":
                kind += 1
                value = FlowParser(text, value_col, self.names).template()
                layout = (tuple(map(tuple, value.blocks)), tuple(value.links), structure(value.value))
            else:
                value = scalar(text)
            layout = (kind, col, name, at + 1, value_col + 1, layout)
            found = (kind, col, name, value, at + 1, value_col + 1, self.layouts.setdefault(layout, len(self.layouts)))
        return found

    def read(self, lines: list[str]) -> list[YamlDocument]:
        """The documents of a file split into ``lines``."""
        for line in dict.fromkeys(lines):  # each distinct line once
            self.digest(line)
        digests = list(map(self.digests.__getitem__, lines))
        layouts = list(map(_LAYOUT, digests))
        starts = []
        at = -1
        try:
            while True:
                at = layouts.index(_START, at + 1)
                starts.append(at)
        except ValueError:
            pass
        stream_end = len(lines) if lines[-1] == "" else len(lines) + 1
        ends = [*starts, len(lines)]
        dots = _END in layouts
        self.document(digests, layouts, 0, ends[0], False, ends[0] + 1 if starts else stream_end, dots)
        for start, end in zip(starts, ends[1:], strict=True):
            self.document(digests, layouts, start + 1, end, True, end + 1 if end < len(lines) else stream_end,
                          dots)
        return self.documents

    def document(self, digests: list[_Digest], layouts: list[int], first: int, end: int, explicit: bool,
                 next_line: int, dots: bool) -> None:
        """Add the document of lines ``first`` to ``end`` (0-based, ``end`` excluded): after a
        "---" when ``explicit``; ``next_line``: where the next token is (an empty document's
        null stands there); ``dots``: whether the file has a "..." line."""
        dots = dots and _END in layouts[first:end]
        if dots:  # only blank lines may follow "..." before a "---"
            at = layouts.index(_END, first, end)
            if layouts[at + 1:end].count(_BLANK) != end - at - 1:
                raise Declined
            end, next_line = at, at + 1
        while end > first and layouts[end - 1] == _BLANK:  # the same shape, whatever blank lines follow
            end -= 1
        shape = tuple(layouts[first:end])
        known = self.shapes.get(shape, 0)
        base = first << 21
        if type(known) is _Shape:
            self.documents.append(known.document(digests[first:end], base))
            return
        if first == end:
            if explicit:
                self.documents.append(YamlDocument(None, next_line, 1))
            elif dots:
                raise Declined  # "..." with no document open
            return
        lines = digests[first:end]
        self.documents.append(self.finish(*_tree(lines, base)))
        if known == 1 and len(self.shapes) < _SHAPES and len(shape) <= _SHAPE_LINES:
            leaves = [(d[0], d[1], d[2], _Leaf(i, d[3]), d[4], d[5], d[6]) for i, d in enumerate(lines)]
            tree, root_mark, blocks, links, scalar_root = _tree(leaves, 0)
            if not scalar_root:
                marks, block = _joined(blocks, links)
                self.shapes[shape] = _Shape(tree, root_mark, marks, block)
                return
        self.shapes[shape] = known + 1 if type(known) is int else known

    @staticmethod
    def finish(root: Any, root_mark: int, blocks: list[list[int]], links: list[tuple[list[int], int, int]],
               scalar_root: bool) -> YamlDocument:
        marks, block = _joined(blocks, links)
        return YamlDocument(root, root_mark >> 21, root_mark & _COLUMNS, marks, block)


def _joined(blocks: list[list[int]], links: list[tuple[list[int], int, int]]) -> tuple[array[int], int]:
    """(marks, the root's block) of a document whose collections filled ``blocks``."""
    marks = array("q")
    starts = []
    total = 0
    for slots in blocks:
        starts.append(total)
        total += len(slots)
    for slots, index, number in links:
        slots[index] = starts[number]
    for slots in blocks:
        marks.fromlist(slots)
    return marks, 0 if blocks else -1


def _place(value: Any, mark: int, blocks: list[list[int]],
           links: list[tuple[list[int], int, int]]) -> tuple[Any, int]:
    """(value, block) of a digested flow collection, on the line of ``mark``."""
    leaf = value if type(value) is _Leaf else None
    template: FlowTemplate = value.value if leaf is not None else value
    first = len(blocks)
    for slots in template.blocks:
        blocks.append([mark | col for col in slots])  # -1 (no nested block) stays -1
    for block, index, nested in template.links:
        links.append((blocks[first + block], index, first + nested))
    if leaf is not None:
        return leaf, first
    value = template.value
    if not template.links:  # flat: its items are scalars
        return (dict(value) if type(value) is dict else list(value)), first
    return copy_value(value), first


def _tree(lines: list[_Digest], mark: int) -> tuple[Any, int, list[list[int]], list[tuple[list[int], int, int]], bool]:
    """(root, root's mark, blocks, links, whether the root is a scalar) of one document's lines,
    the first of them on the line after ``mark``."""
    # The innermost open collection, in locals (indentation, value, slots, is a list); the ones
    # around it on ``stack``. ``mapping_at``: its indentation when it is a mapping that takes
    # the next "key: scalar" line as is (no key waiting for a value), else -1.
    indent = mapping_at = -1
    container: Any = None
    slots: list[int] = []
    is_list = False
    stack: list[tuple[int, Any, list[int], bool]] = []
    # A "key:" or "-" with nothing after it on its line, until the next line says whether a
    # collection follows: (its slots, index of its mark there, its key or item number).
    pending: tuple[list[int], int, Any] | None = None
    blocks: list[list[int]] = []  # the slots of every collection, in the order they open
    links: list[tuple[list[int], int, int]] = []  # (slots, index, block) to fill in at the end
    root: Any = None
    root_mark = 0  # 0: nothing written yet
    scalar_root = False
    for kind, col, key, value, key_col, value_col, _ in lines:
        mark += _LINE_STEP
        if kind == _ENTRY and col == mapping_at:  # the commonest line: one more field
            if key in container:
                raise Declined  # a duplicate key: the libyaml path reports it
            container[key] = value
            slots += (mark | key_col, mark | value_col, -1)
            continue
        if kind <= _END:
            if kind == _BLANK:
                continue
            raise Declined  # pragma: no cover - documents are split at markers
        if not root_mark:  # the document's first node
            root_mark = mark | (col + 1)
            if kind >= _SCALAR:
                root, number = _place(value, mark, blocks, links) if kind == _FLOW else (value, -1)
                root_mark = mark | value_col
                scalar_root = True
                continue
            slots = []
            blocks.append(slots)
            container = root = [] if kind >= _ITEM else {}
            indent, is_list = col, kind >= _ITEM
        elif scalar_root:
            raise Declined
        else:
            if pending is not None:
                parent_slots, index, part = pending
                pending = None
                if col > indent or (col == indent and kind >= _ITEM and not is_list):
                    # the collection that is the waiting key's (or item's) value
                    if kind >= _SCALAR or len(stack) >= _DEEPEST_BLOCK:
                        raise Declined
                    child: Any = [] if kind >= _ITEM else {}
                    container[part] = child
                    stack.append((indent, container, slots, is_list))
                    slots = []
                    blocks.append(slots)
                    parent_slots[index] = mark | (col + 1)
                    links.append((parent_slots, index + 1, len(blocks) - 1))
                    indent, container, is_list = col, child, kind >= _ITEM
            while indent > col:
                if not stack:
                    raise Declined
                indent, container, slots, is_list = stack.pop()
            if indent != col or kind >= _SCALAR:
                raise Declined  # more indented than its collection: a continued scalar
            if is_list and kind < _ITEM:  # the end of a list written at its key's indentation
                if not stack:
                    raise Declined
                indent, container, slots, is_list = stack.pop()
                if indent != col or is_list:
                    raise Declined
        if kind >= _ITEM:
            if not is_list:
                raise Declined  # a "-" where a key belongs
            mapping_at = -1
            if kind >= _ITEM_ENTRY:  # "- key: ...": a mapping as the item
                if len(stack) >= _DEEPEST_BLOCK:
                    raise Declined
                child = {}
                container.append(child)
                stack.append((indent, container, slots, is_list))
                slots += (mark | key_col, 0)
                links.append((slots, len(slots) - 1, len(blocks)))
                slots = []
                blocks.append(slots)
                indent, container, is_list = key_col - 1, child, False
                kind -= _ITEM_ENTRY - _ENTRY
            elif kind == _ITEM:
                container.append(value)
                slots += (mark | value_col, -1)
                continue
            elif kind == _ITEM_FLOW:
                value, number = _place(value, mark, blocks, links)
                container.append(value)
                slots += (mark | value_col, number)
                links.append((slots, len(slots) - 1, number))
                continue
            else:
                pending = (slots, len(slots), len(container))
                container.append(None)
                slots += (mark | value_col, -1)
                continue
        elif is_list:
            raise Declined
        if key in container:
            raise Declined
        if kind == _ENTRY:
            container[key] = value
            slots += (mark | key_col, mark | value_col, -1)
        elif kind == _ENTRY_FLOW:
            value, number = _place(value, mark, blocks, links)
            container[key] = value
            slots += (mark | key_col, mark | value_col, number)
            links.append((slots, len(slots) - 1, number))
        else:
            pending = (slots, len(slots) + 1, key)
            container[key] = None
            slots += (mark | key_col, mark | value_col, -1)
        mapping_at = indent if pending is None else -1
    return root, root_mark, blocks, links, scalar_root
