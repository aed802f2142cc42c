"""Render a Plan as text (terraform-like), JSON (the stable contract) or Markdown (a PR comment)."""

from __future__ import annotations

import json
import json.encoder
import os
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from reconciler.planning.plan import JSON, Change, Plan

SYMBOLS = {"create": "+", "update": "~", "delete": "-", "conflict": "!", "no-op": " "}
COLOURS = {"create": "32", "update": "33", "delete": "31", "conflict": "35"}  # ANSI green/yellow/red/magenta
FORMATS = ("text", "json", "markdown")


def use_colour(stream: IO[str]) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


def _reusable_encoder(**options: Any) -> Callable[[JSON], str]:
    """``json.dumps(value, **options)`` without building a new encoder on every call.

    ``json.dumps`` with any option makes a JSONEncoder and its C encoder per call: for the
    small values of a plan (tens of thousands per 10,000-Service plan) that setup costs more
    than the encoding. The C encoder is made once here, with the same settings ``dumps`` would
    use (no circular-reference check: plan values are plain trees), so the bytes are the same.
    """
    encoder = json.JSONEncoder(**options)
    make_c_encoder = getattr(json.encoder, "c_make_encoder", None)
    if make_c_encoder is None:  # an interpreter without the C accelerator
        return encoder.encode
    encode_string = json.encoder.encode_basestring_ascii if encoder.ensure_ascii else json.encoder.encode_basestring
    c_encoder = make_c_encoder(None, encoder.default, encode_string, None, encoder.key_separator,
                               encoder.item_separator, encoder.sort_keys, encoder.skipkeys, encoder.allow_nan)

    def encode(value: JSON) -> str:
        return "".join(c_encoder(value, 0))

    return encode


_encode_compact = _reusable_encoder(sort_keys=True, separators=(", ", ": "))
_json_line = _reusable_encoder(sort_keys=True)
_string: Callable[[str], str] = json.encoder.encode_basestring_ascii  # what dumps does to a str


def _compact(value: JSON) -> str:
    """One value on one line, as ``json.dumps(value, sort_keys=True)`` spells it; a string (most
    fields of a plan: pools, names, reasons) skips the encoder's setup for one call."""
    return _string(value) if type(value) is str else _encode_compact(value)


def _field_lines(change: Change) -> list[str]:
    """``key: before -> after`` for each field that differs (whole values for create/delete)."""
    before, after = change.before, change.after
    if isinstance(before, dict) and isinstance(after, dict):
        keys = sorted(before.keys() | after.keys())
        return [f"{k}: {_compact(before.get(k))} -> {_compact(after.get(k))}"
                for k in keys if before.get(k) != after.get(k)]
    if isinstance(before, list) and isinstance(after, list):
        removed = [item for item in before if item not in after]
        added = [item for item in after if item not in before]
        return [f"- {_compact(item)}" for item in removed] + [f"+ {_compact(item)}" for item in added]
    shown = after if after is not None else before
    if isinstance(shown, dict):
        return [f"{k}: {_compact(v)}" for k, v in sorted(shown.items())]
    if isinstance(shown, list):
        return [_compact(item) for item in shown]
    return [] if shown is None else [_compact(shown)]


def summary_line(plan: Plan) -> str:
    s = plan.summary()
    if not plan.has_changes:
        return "No changes. The live state matches the desired state."
    return (f"Plan: {s['create']} to create, {s['update']} to update, {s['delete']} to delete, "
            f"{s['conflict']} conflict(s).")


def render_text(plan: Plan, colour: bool = False) -> str:
    return "".join(text_chunks(plan, colour))


def text_chunks(plan: Plan, colour: bool = False) -> Iterator[str]:
    """The text plan, a change at a time (a command writes it as it goes: the 20,000 changes of
    a large first plan never sit in memory as one string)."""
    def paint(action: str, text: str) -> str:
        return f"\033[{COLOURS[action]}m{text}\033[0m" if colour and action in COLOURS else text

    if plan.revision:
        yield f"revision {plan.revision}\n"
    for change in plan.visible:
        yield (paint(change.action, f"{SYMBOLS[change.action]} {change.target}") + f"  ({change.reason})\n"
               + "".join([f"    {line}\n" for line in _field_lines(change)]))
    for warning in plan.warnings:
        yield f"warning: {warning}\n"
    yield summary_line(plan) + "\n"


def render_json(plan: Plan) -> str:
    return "".join(json_chunks(plan))


def json_chunks(plan: Plan) -> Iterator[str]:
    """The JSON contract, one change per line: readable, diffable, and encoded by json's C
    encoder (``indent=`` would force the pure-Python one, 10x slower on 20,000 changes)."""
    yield "{" + _json_line(plan.header())[1:-1] + ',\n "changes": ['
    separator = "\n  "
    for change in plan.visible:
        yield separator + _change_line(change)
        separator = ",\n  "
    yield "]}\n" if separator == "\n  " else "\n ]}\n"


def _change_line(change: Change) -> str:
    """``json.dumps(change.as_dict(), sort_keys=True)``, spelled out: the fixed outer keys in
    sorted order around the encoded values, which skips building and sorting two dicts per
    change (JSON was the slowest renderer; tests hold the two spellings equal)."""
    before = "null" if change.before is None else _json_line(change.before)
    after = "null" if change.after is None else _json_line(change.after)
    return (f'{{"action": {_string(change.action)}, "after": {after}, "before": {before}, '
            f'"reason": {_string(change.reason)}, "target": {{"id": {_string(change.target.id)}, '
            f'"kind": {_string(change.target.kind)}}}}}')


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(plan: Plan) -> str:
    title = "### portside plan" + (f" for `{plan.revision[:12]}`" if plan.revision else "")
    lines = [title, "", f"**{summary_line(plan)}**", ""]
    if plan.has_changes:
        lines += ["| | target | change | reason |", "|---|---|---|---|"]
        for change in plan.visible:
            detail = "<br>".join(_md_cell(f"`{line}`") for line in _field_lines(change)[:8])
            lines.append(f"| {SYMBOLS[change.action]} {change.action} | `{_md_cell(str(change.target))}` "
                         f"| {detail} | {_md_cell(change.reason)} |")
        lines.append("")
    if plan.warnings:
        lines += ["<details><summary>warnings</summary>", ""]
        lines += [f"- {_md_cell(w)}" for w in plan.warnings]
        lines += ["", "</details>", ""]
    return "\n".join(lines)


RENDERERS: dict[str, Callable[[Plan], str]] = {
    "json": render_json,
    "markdown": render_markdown,
}


def render(plan: Plan, fmt: str, stream: IO[str]) -> str:
    return "".join(render_chunks(plan, fmt, stream))


def render_chunks(plan: Plan, fmt: str, stream: IO[str]) -> Iterable[str]:
    """The plan in ``fmt`` for ``stream``, in pieces to write one after another."""
    if fmt == "text":
        return text_chunks(plan, colour=use_colour(stream))
    if fmt == "json":
        return json_chunks(plan)
    return (RENDERERS[fmt](plan),)
