"""One YAML document as the loader sees it: its plain value and where each field was written.

Both sources of documents produce these: the fast path for everyday block YAML
(:mod:`reconciler.desired.yamlfast`) and libyaml's nodes (:mod:`reconciler.desired.yamlsource`).
Plain scalars are resolved here, once for both, with the YAML 1.2 core schema.
"""

from __future__ import annotations

import re
from array import array
from typing import Any

FieldPath = tuple[str | int, ...]

# How deeply mappings and lists may nest. Real documents stay below 15 levels; a hostile file of
# 300,000 nested "[" would otherwise cost memory quadratic in its depth (every field path).
MAX_DEPTH = 64

_NULLS = {"", "~", "null", "Null", "NULL"}
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
# The core schema's other numbers, spelled exactly (Python's int() would also take "0x 1F",
# "0x0x1", "0x1_F" or non-ASCII digits, and lower() would let ".iNf" through).
_OCT = re.compile(r"0o[0-7]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_SPECIAL_FLOATS = {
    **{sign + text: float(sign + "inf") for sign in ("", "+", "-") for text in (".inf", ".Inf", ".INF")},
    **{text: float("nan") for text in (".nan", ".NaN", ".NAN")},
}
# First characters a non-string plain scalar can start with: callers skip resolution for the rest.
MAYBE_NOT_STR = frozenset("0123456789-+.~nNtTfF")
_COLUMNS = (1 << 21) - 1  # the column's bits of a position; block numbers stay below it too


class YamlDocument:
    """One document of a file: its value and where each field of it was written (1-based).

    Positions live in one flat array of ints per document, packed as ``line << 21 | column``.
    Every mapping and list owns a contiguous block of it, entry by entry in the order of its value
    (a dict's insertion order): three slots per mapping entry (key position, value position, block
    of the value or -1 when it is a scalar), two per list item (value position, block). A field
    is found by walking the value and the blocks side by side, so nothing per field is kept but
    those ints: no strings, no objects the cyclic garbage collector would scan. Blocks are laid
    out in the order their collections open (each before those nested in it).

    Documents of one layout (generated repos repeat one thousands of times) may share one array,
    written as if the document started on line 0: ``shift`` (lines << 21) is then added to every
    position read from it, never to a block number.
    """

    __slots__ = ("_value", "block", "col", "line", "marks", "shift")

    def __init__(self, value: Any, line: int, col: int, marks: array[int] | None = None, block: int = -1,
                 shift: int = 0) -> None:
        self._value = value
        self.line = line  # where the root value was written
        self.col = col
        self.marks = array("q") if marks is None else marks
        self.block = block  # the root container's block in marks; -1: the root is a scalar
        self.shift = shift

    @property
    def value(self) -> Any:
        return self._value

    def _layout(self) -> Any:
        """What positions are looked up in: the value, or anything with its keys and list lengths."""
        return self._value

    def __repr__(self) -> str:
        return (f"YamlDocument(value={self.value!r}, line={self.line}, col={self.col}, block={self.block}, "
                f"shift={self.shift})")

    def absolute_marks(self) -> array[int]:
        """``marks`` with ``shift`` added to every position: what a document of its own holds."""
        if not self.shift:
            return self.marks
        shift = self.shift
        return array("q", [mark + shift if mark > _COLUMNS else mark for mark in self.marks])

    def _trail(self, path: FieldPath) -> tuple[int, int, int]:
        """(how many parts of ``path`` were written, position of the last one, position of its key
        or 0); the root counts as written, at the document's own position."""
        value, block, marks, shift = self._layout(), self.block, self.marks, self.shift
        found, position, key = 0, pack_position(self.line, self.col), 0
        for part in path:
            if block < 0:
                break
            if type(value) is dict and isinstance(part, str) and part in value:
                base = block + 3 * index_of(value, part)
                key, position, block = marks[base] + shift, marks[base + 1] + shift, marks[base + 2]
            elif type(value) is list and type(part) is int and 0 <= part < len(value):
                base = block + 2 * part
                key, position, block = 0, marks[base] + shift, marks[base + 1]
            else:
                break
            value = value[part]
            found += 1
        return found, position, key

    def position(self, path: FieldPath) -> tuple[int, int]:
        """Where the value at ``path`` was written, or the nearest enclosing node that was."""
        return unpack_position(self._trail(path)[1])

    def key_position(self, path: FieldPath) -> tuple[int, int]:
        """Where the key of the field at ``path`` was written (falls back to its value)."""
        found, position, key = self._trail(path)
        return unpack_position(key if path and found == len(path) and key else position)

    def has_key(self, path: FieldPath) -> bool:
        found, _, key = self._trail(path)
        return bool(path) and found == len(path) and key != 0


def index_of(mapping: dict[str, Any], key: str) -> int:
    for index, name in enumerate(mapping):
        if name == key:
            return index
    raise KeyError(key)


def pack_position(line: int, column: int) -> int:
    # Columns stay below 2**21: a file is at most 1 MiB.
    return line << 21 | column


def unpack_position(packed: int) -> tuple[int, int]:
    return packed >> 21, packed & _COLUMNS



def resolve_plain(text: str) -> Any:
    """The value of an untagged plain scalar under the YAML 1.2 core schema."""
    if text and text[0] not in MAYBE_NOT_STR:
        return text
    if text in _NULLS:
        return None
    if text in _BOOLS:
        return _BOOLS[text]
    if _INT.fullmatch(text):
        return int(text)
    if _OCT.fullmatch(text):
        return int(text[2:], 8)
    if _HEX.fullmatch(text):
        return int(text[2:], 16)
    if _FLOAT.fullmatch(text):
        return float(text)
    return _SPECIAL_FLOATS.get(text, text)
