"""Escape-by-default HTML building: text is escaped unless it is already :class:`Markup`.

A page is assembled from small calls to :func:`el`; every string that is not ``Markup`` is
passed through ``html.escape(..., quote=True)`` on the way in, attribute values always, so a
hostile Service name, annotation or error message can only ever appear as text. The same rules
hold inside inline SVG, whose text and attributes go through the same functions.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping

__all__ = ["Markup", "el", "esc", "join", "void"]


class Markup(str):
    """A string of trusted, already escaped markup."""

    __slots__ = ()


def esc(value: object) -> Markup:
    """``value`` as text: ``&``, ``<``, ``>``, ``"`` and ``'`` escaped (Markup passes unchanged)."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def _attrs(attrs: Mapping[str, object]) -> str:
    parts = []
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        # Python keywords: class_ -> class, http_equiv -> http-equiv.
        key = name.rstrip("_").replace("_", "-")
        if value is True:
            parts.append(f" {key}")
        else:
            parts.append(f' {key}="{html.escape(str(value), quote=True)}"')
    return "".join(parts)


def _render(children: Iterable[object], out: list[str]) -> None:
    # The hot path of a 1,000-Service page: a plain loop, no generators.
    for child in children:
        if child is None:
            continue
        if isinstance(child, str):
            out.append(child if isinstance(child, Markup) else html.escape(child, quote=True))
        elif isinstance(child, Iterable):
            _render(child, out)
        else:
            out.append(html.escape(str(child), quote=True))


def join(children: Iterable[object]) -> Markup:
    """Children concatenated, each escaped unless it is Markup; None is skipped, iterables flattened."""
    out: list[str] = []
    _render(children, out)
    return Markup("".join(out))


def el(tag: str, *children: object, **attrs: object) -> Markup:
    """``<tag attrs>children</tag>``; attribute names may end in ``_`` (``class_``)."""
    out = [f"<{tag}{_attrs(attrs) if attrs else ''}>"]
    _render(children, out)
    out.append(f"</{tag}>")
    return Markup("".join(out))


def void(tag: str, **attrs: object) -> Markup:
    """An element without content or end tag (``meta``, ``br``)."""
    return Markup(f"<{tag}{_attrs(attrs)}>")
