"""Scalars and flow collections written on one line, for the fast path of :mod:`yamlfast`.

Each function here gives exactly what libyaml's path gives for the same text, or raises
:class:`Declined` when the text is outside what the fast path takes (an unknown escape, a
multi-line flow collection, a key libyaml would refuse or report).
"""

from __future__ import annotations

import re
from typing import Any

from reconciler.desired.yamldoc import MAYBE_NOT_STR, resolve_plain

# Characters after which libyaml would read a line differently from this module: tabs, carriage
# returns and the other line breaks it knows (NEL, LS, PS), BOMs, and what its reader refuses.
REFUSED = "\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff"
ANY = f"[^{REFUSED}]"
SINGLE_QUOTED = rf"'(?:[^'{REFUSED}]|'')*'"
DOUBLE_QUOTED = rf'"(?:[^"\\{REFUSED}]|\\{ANY})*"'

# Inside a flow collection: flow indicators end a plain scalar, and ":" continues one only
# before a character that could go on with it.
_FLOW_PLAIN = (rf"""(?:[^-?:,\[\]{{}}\#&*!|>'"%@`\ {REFUSED}]|-(?=[^\ ,\[\]{{}}{REFUSED}]))"""
               rf"""(?:[^:,\[\]{{}}\ {REFUSED}]++|:(?=[^\ ,\[\]{{}}?{REFUSED}])"""
               rf"""|\ ++(?=[^\ \#:,\[\]{{}}{REFUSED}]|:[^\ ,\[\]{{}}?{REFUSED}]))*""")
# One token of a flow collection: (indicator, plain scalar, quoted scalar, ": ").
_FLOW_TOKEN = re.compile(rf"\ *(?:([\[\]{{}},])|({_FLOW_PLAIN})|({SINGLE_QUOTED}|{DOUBLE_QUOTED})|(:\ ))",
                         re.VERBOSE)
_FLOW_TAIL = re.compile(rf"\ *(?:(?<=\ )\#{ANY}*)?")

_ESCAPE = re.compile(r"\\(?:x([0-9A-Fa-f]{2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|(.))")
_ESCAPES = {"0": "\0", "a": "\a", "b": "\b", "t": "\t", "n": "\n", "v": "\v", "f": "\f", "r": "\r",
            "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\", "N": "\x85", "_": "\xa0",
            "L": "\u2028", "P": "\u2029"}
# libyaml gives up on an implicit key over 1,024 characters (or bytes): far above real keys.
LONGEST_KEY = 250
# Well below MAX_DEPTH (64), where the libyaml path refuses a document with its own message.
_DEEPEST_FLOW = 16
QUOTES = frozenset("'\"")


class Declined(Exception):
    """The text is outside the subset: the libyaml path must read the file."""


def _single_quoted(text: str) -> str:
    return text[1:-1].replace("''", "'")


def _escape(match: re.Match[str]) -> str:
    short = match.group(4)
    if short is not None:
        value = _ESCAPES.get(short)
        if value is None:
            raise Declined
        return value
    code = int(match.group(1) or match.group(2) or match.group(3), 16)
    if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
        raise Declined
    return chr(code)


def _double_quoted(text: str) -> str:
    body = text[1:-1]
    return _ESCAPE.sub(_escape, body) if "\\" in body else body


def scalar(text: str) -> Any:
    """The value of a plain or quoted scalar as written."""
    first = text[0]
    if first == "'":
        return _single_quoted(text)
    if first == '"':
        return _double_quoted(text)
    return resolve_plain(text) if first in MAYBE_NOT_STR else text


def copy_value(value: Any) -> Any:
    if type(value) is dict:
        return {key: copy_value(item) for key, item in value.items()}
    if type(value) is list:
        return [copy_value(item) for item in value]
    return value


class FlowTemplate:
    """A flow collection as one line writes it, ready to be placed on any line.

    ``blocks`` hold the slots of its collections in the order they open, marks as bare columns;
    ``links`` say which slots hold the number of a nested block (counted from the first here).
    """

    __slots__ = ("blocks", "links", "value")

    def __init__(self, value: Any, blocks: list[list[int]], links: list[tuple[int, int, int]]) -> None:
        self.value = value
        self.blocks = blocks
        self.links = links


class FlowParser:
    """One flow collection written on one line, from ``[`` or ``{`` to the line's end."""

    def __init__(self, text: str, col: int, names: dict[str, str]) -> None:
        self.text = text
        self.col = col + 1  # 1-based column of the text's first character
        self.names = names
        self.blocks: list[list[int]] = []
        self.links: list[tuple[int, int, int]] = []  # (block, slot, nested block)

    def template(self) -> FlowTemplate:
        value, end, _ = self.node(0, 0)
        if _FLOW_TAIL.fullmatch(self.text, end) is None:
            raise Declined
        return FlowTemplate(value, self.blocks, self.links)

    def token(self, pos: int) -> re.Match[str]:
        match = _FLOW_TOKEN.match(self.text, pos)
        if match is None:
            raise Declined
        return match

    def node(self, pos: int, depth: int) -> tuple[Any, int, int]:
        """(value, position after it, its block or -1) of the node at ``pos``."""
        match = self.token(pos)
        kind = match.lastindex
        if kind == 2 or kind == 3:
            return scalar(match.group(kind)), match.end(), -1
        indicator = match.group(1)
        if depth >= _DEEPEST_FLOW or (indicator != "[" and indicator != "{"):
            raise Declined
        slots: list[int] = []
        self.blocks.append(slots)
        number = len(self.blocks) - 1
        closing = "]" if indicator == "[" else "}"
        collection: Any = [] if indicator == "[" else {}
        pos = match.end()
        if self.token(pos).group(1) == closing:
            return collection, self.token(pos).end(), number
        while True:
            if indicator == "{":
                key_match = self.token(pos)
                kind = key_match.lastindex
                if kind != 2 and kind != 3:
                    raise Declined
                key = mapping_key(key_match.group(kind), collection, self.names)
                separator = self.token(key_match.end())
                if separator.lastindex != 4:
                    raise Declined
                slots.append(self.col + key_match.start(kind))
                pos = separator.end()
            start = self.token(pos)
            if start.lastindex is None or start.lastindex == 4:
                raise Declined  # ": " where a node belongs
            value, pos, nested = self.node(pos, depth + 1)
            slots.append(self.col + start.start(start.lastindex))
            slots.append(nested)
            if nested >= 0:
                self.links.append((number, len(slots) - 1, nested))
            if indicator == "{":
                collection[key] = value
            else:
                collection.append(value)
            end = self.token(pos)
            if end.group(1) == closing:
                return collection, end.end(), number
            if end.group(1) != ",":
                raise Declined
            pos = end.end()


def mapping_key(text: str, mapping: dict[str, Any], names: dict[str, str]) -> str:
    """A mapping key as written: declined when libyaml's path must refuse or report it."""
    if len(text) > LONGEST_KEY:
        raise Declined
    key = scalar(text) if text[0] in QUOTES else text  # a plain key is never resolved
    key = names.setdefault(key, key)
    if key in mapping or key == "<<":
        raise Declined
    return key



def structure(value: Any) -> Any:
    """Keys and list lengths of a flow collection: part of its line's layout (with its columns)."""
    if type(value) is dict:
        return "map", tuple((key, structure(item)) for key, item in value.items())
    if type(value) is list:
        return "seq", tuple(structure(item) for item in value)
    return None
