"""Label and field selectors, parsed and matched as the real server does."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tests.fakes.kubeapi.errors import (
    _bad_request,
)
from tests.fakes.kubeapi.kinds import (
    Obj,
    _Kind,
)

_REQUIREMENT = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9./_-]+)\s*"
    r"(?:(?P<op>==|=|!=|\s+in\s+|\s+notin\s+)\s*(?P<value>\([^)]*\)|[A-Za-z0-9._-]*))?\s*$")


def _split_terms(text: str) -> list[str]:
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return [t for t in terms if t.strip()]


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # exists | !exists | = | != | in | notin
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op in ("=", "in"):
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values  # != and notin match a missing label too


@dataclass(frozen=True)
class _LabelSelector:
    requirements: tuple[_Requirement, ...]

    def __call__(self, labels: dict[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def _label_selector(text: str) -> _LabelSelector:
    requirements = []
    for term in _split_terms(text):
        m = _REQUIREMENT.match(term)
        if not m or (m["neg"] and m["op"]):
            raise _bad_request(f"unable to parse requirement: found '{term.strip()}', expected: valid "
                               "label selector")
        key, op, value = m["key"], (m["op"] or "").strip(), m["value"] or ""
        if m["neg"]:
            requirements.append(_Requirement(key, "!exists"))
        elif not op:
            requirements.append(_Requirement(key, "exists"))
        elif op in ("=", "==", "!="):
            requirements.append(_Requirement(key, "!=" if op == "!=" else "=", frozenset({value})))
        else:
            if not value.startswith("("):
                raise _bad_request(f"unable to parse requirement: found '{term.strip()}', expected: '('")
            values = frozenset(v.strip() for v in value[1:-1].split(",") if v.strip())
            requirements.append(_Requirement(key, op, values))
    return _LabelSelector(tuple(requirements))


def _field_value(obj: Obj, path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if path == "source":
        node = (obj.get("source") or {}).get("component")
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


@dataclass(frozen=True)
class _FieldSelector:
    terms: tuple[tuple[str, bool, str], ...]  # (field path, equal?, value)

    def __call__(self, obj: Obj) -> bool:
        return all((_field_value(obj, path) == value) == equal for path, equal, value in self.terms)


def _field_selector(kind: _Kind, text: str) -> _FieldSelector:
    terms = []
    for term in _split_terms(text):
        m = re.fullmatch(r"\s*([A-Za-z0-9._]+)\s*(==|=|!=)\s*(.*?)\s*", term)
        if not m:
            raise _bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        path, op, value = m.groups()
        if path not in kind.fields:
            raise _bad_request(f"field label not supported: {path}")
        terms.append((path, op != "!=", value))
    return _FieldSelector(tuple(terms))

