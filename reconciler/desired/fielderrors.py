"""pydantic's validation errors, rewritten as messages that say what to fix.

pydantic reports ``extra_forbidden`` at ``('spec', 'adress')`` with "Extra inputs are not
permitted"; a user needs ``unknown field "adress" (allowed: addresses, autoAssign, ...); did you
mean "addresses"?``. The model classes are walked along the error's location to learn what was
expected there, so the message can say "expected a list of strings, got a string".
"""

from __future__ import annotations

import difflib
import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from reconciler.desired.models import DNS_LABEL, DNS_SUBDOMAIN

FieldPath = tuple[str | int, ...]

_NAME_RULE = "lowercase letters, digits and '-'{dots}, starting and ending with a letter or digit"
_YAML11_BOOLS = {"yes", "no", "on", "off", "y", "n"}
_DURATION_HINT = 'a duration such as "30s", "1m30s" or "500ms" (or whole seconds)'


@dataclass(frozen=True)
class FieldProblem:
    """One field error: the field's path, whether to point at its key, and the message."""

    path: FieldPath
    message: str
    at_key: bool = False  # unknown fields point at their key, missing ones at their parent's key
    suggestion: str | None = None  # for an unknown field: the allowed field it probably meant
    missing: bool = False


def explain(errors: list[ErrorDetails], model: type[BaseModel], data: Any) -> list[FieldProblem]:
    """Turn pydantic's errors for ``model.model_validate(data)`` into user-facing problems."""
    problems: list[FieldProblem] = []
    seen: set[FieldPath] = set()
    for error in errors:
        path, through_union = _field_path(error["loc"], data, error["type"] == "missing")
        if through_union and path in seen:
            continue  # one message per field, not one per union member that failed
        seen.add(path)
        problems.append(_problem(error, path, through_union, model))
    # A misspelt field is also a missing one; "did you mean" already says both, so say it once.
    suggested = {(*p.path[:-1], p.suggestion) for p in problems if p.suggestion}
    return [p for p in problems if not (p.missing and p.path in suggested)]


def _field_path(loc: tuple[str | int, ...], data: Any, missing: bool) -> tuple[FieldPath, bool]:
    """The error's location with pydantic's union-member tags ('int', 'constrained-str') left out."""
    path: list[str | int] = []
    current = data
    skipped = False
    for index, part in enumerate(loc):
        in_dict = isinstance(current, dict) and isinstance(part, str) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_dict or in_list:
            current = current[part]
        elif missing and index == len(loc) - 1:
            current = None
        else:
            skipped = True
            continue
        path.append(part)
    return tuple(path), skipped


def _problem(
    error: ErrorDetails, path: FieldPath, through_union: bool, model: type[BaseModel]
) -> FieldProblem:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "extra_forbidden":
        message, suggestion = _unknown_field(model, path)
        return FieldProblem(path, message, at_key=True, suggestion=suggestion)
    if kind == "missing":
        return FieldProblem(path, f'missing required field "{path[-1]}"', at_key=True, missing=True)
    if kind in ("value_error", "assertion_error"):
        # A model validator's complaint is about the whole mapping: point at its key.
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        return FieldProblem(path, message, at_key=bool(path))
    annotation = annotation_at(model, path)
    if through_union or kind.endswith(("_type", "_parsing")) or kind in (
            "literal_error", "int_from_float", "model_attributes_type", "union_tag_invalid"):
        if _is_duration(annotation) and isinstance(value, str):
            return FieldProblem(path, f'"{value}" is not a duration: write {_DURATION_HINT}')
        if kind == "literal_error":
            expected = ctx.get("expected", "")
            return FieldProblem(path, f"must be one of {expected}, got {describe_value(value)}")
        message = f"expected {describe(annotation)}, got {describe_value(value)}"
        if _unwrap(annotation) is bool and isinstance(value, str) and value.lower() in _YAML11_BOOLS:
            message += " (YAML 1.2 reads yes/no/on/off as strings: write true or false)"
        return FieldProblem(path, message)
    if kind == "string_pattern_mismatch":
        return FieldProblem(path, _pattern_message(str(ctx.get("pattern", "")), value))
    if kind == "string_too_short":
        return FieldProblem(path, "must not be empty")
    if kind == "string_too_long":
        return FieldProblem(path, f"is longer than {ctx.get('max_length')} characters")
    if kind == "too_short":
        count = ctx.get("min_length")
        return FieldProblem(path, f"needs at least {count} {'entry' if count == 1 else 'entries'}")
    if kind == "too_long":
        most, got = ctx.get("max_length"), ctx.get("actual_length")
        return FieldProblem(path, f"allows at most {most} entries, got {got}")
    bounds = {"greater_than_equal": "at least {ge}", "less_than_equal": "at most {le}",
              "greater_than": "greater than {gt}", "less_than": "less than {lt}"}
    if kind in bounds:
        return FieldProblem(path, f"must be {bounds[kind].format(**ctx)}, got {value!r}")
    return FieldProblem(path, error["msg"])


def _unknown_field(model: type[BaseModel], path: FieldPath) -> tuple[str, str | None]:
    parent = _unwrap(annotation_at(model, path[:-1]))
    name = str(path[-1])
    name = name if len(name) <= 60 else name[:57] + "..."
    if not (isinstance(parent, type) and issubclass(parent, BaseModel)):
        return f'unknown field "{name}"', None
    allowed = list(parent.model_fields)
    message = f'unknown field "{name}" (allowed: {", ".join(allowed)})'
    close = difflib.get_close_matches(name, allowed, n=1)
    if not close:
        return message, None
    return f'{message}; did you mean "{close[0]}"?', close[0]


def _pattern_message(pattern: str, value: Any) -> str:
    if pattern == DNS_SUBDOMAIN:
        return f'"{value}" is not a valid name: use {_NAME_RULE.format(dots=", and dots between parts")}'
    if pattern == DNS_LABEL:
        return f'"{value}" is not a valid namespace: use {_NAME_RULE.format(dots="")}, at most 63 characters'
    if "ns|us" in pattern:
        return f'"{value}" is not a duration: write {_DURATION_HINT}'
    return f'"{value}" does not match the pattern {pattern}'


def annotation_at(model: type[BaseModel], path: FieldPath) -> Any:
    """The type annotation of the field at ``path`` (None when the path leaves the model)."""
    current: Any = model
    for part in path:
        current = _unwrap(current)
        origin = get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel) and isinstance(part, str):
            info = current.model_fields.get(part)
            current = info.annotation if info is not None else None
        elif origin is list and isinstance(part, int):
            current = get_args(current)[0]
        elif origin is dict:
            current = get_args(current)[1]
        else:
            return None
    return current


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated[...] and ``| None``; other unions are kept (they mean "one of")."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
            continue
        if _is_union(annotation):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def _is_duration(annotation: Any) -> bool:
    annotation = _unwrap(annotation)
    return _is_union(annotation) and any("ns|us" in str(a) for a in get_args(annotation))


def describe(annotation: Any, plural: bool = False) -> str:
    """What a value of this type looks like, in words: "a list of strings"."""
    annotation = _unwrap(annotation)
    origin = get_origin(annotation)
    if _is_duration(annotation):
        return "durations" if plural else _DURATION_HINT
    if _is_union(annotation):
        return " or ".join(describe(a, plural) for a in get_args(annotation) if a is not type(None))
    if origin is list:
        return "lists" if plural else f"a list of {describe(get_args(annotation)[0], plural=True)}"
    if origin is dict or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return "mappings" if plural else "a mapping (key: value)"
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(annotation))
    words = {str: ("a string", "strings"), int: ("an integer", "integers"),
             bool: ("true or false", "booleans"), float: ("a number", "numbers")}
    if annotation in words:
        return words[annotation][1 if plural else 0]
    return "something else"


def describe_value(value: Any) -> str:
    """A short description of what the user wrote: 'a string ("abc")', 'a list'."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'a string ("{shown}")'
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
