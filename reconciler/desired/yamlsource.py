"""YAML text -> plain Python values, with the line and column of every field.

Everyday block YAML is read straight from the text (:mod:`reconciler.desired.yamlfast`); any
other file, and every file the fast path declines, goes through libyaml
(:mod:`reconciler.desired.yamllib`), imported only when a file needs it. Both give the same
documents: values under the YAML 1.2 core schema and a position for every field.
"""

from __future__ import annotations

import json
import re

from reconciler.common.errors import Diagnostic
from reconciler.desired.yamldoc import FieldPath, YamlDocument
from reconciler.desired.yamlfast import fast_documents


def parse_yaml(data: bytes, file: str) -> tuple[list[YamlDocument], list[Diagnostic]]:
    """Every document of one file, or the diagnostics that say why it cannot be used.

    ``data`` must already be valid UTF-8. A syntax error stops the file (a YAML parser cannot
    resynchronise reliably); problems inside well-formed YAML (duplicate keys) are all reported.
    Everyday block YAML takes the fast path; it declines anything else, which libyaml reads.
    The fast path reads its subset as the YAML spec and libyaml do, with or without libyaml
    installed (PyYAML's own parser, the fallback then, differs in corners such as a "?" inside
    a flow collection's plain scalar, which it refuses).
    """
    documents = fast_documents(data)
    if documents is not None:
        return documents, []
    from reconciler.desired.yamllib import parse_yaml_with_libyaml  # PyYAML: only when needed

    return parse_yaml_with_libyaml(data, file)


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
