"""The page skeleton every page shares: head (charset, the hashed stylesheet, refresh), header, main."""

from __future__ import annotations

from reconciler.pages.markup import Markup, el, void
from reconciler.pages.style import STYLESHEET


def document(title: str, subtitle: str, body: Markup, *, refresh_seconds: int | None = None,
             footer: str = "") -> str:
    """A complete HTML document. ``refresh_seconds`` reloads it (a meta refresh: no script needed)."""
    head = [
        void("meta", charset="utf-8"),
        void("meta", name="viewport", content="width=device-width, initial-scale=1"),
        void("meta", name="referrer", content="no-referrer"),
        void("meta", http_equiv="refresh", content=str(refresh_seconds)) if refresh_seconds else None,
        el("title", title),
        # The stylesheet goes in verbatim: the Content-Security-Policy allows it by its hash.
        Markup(f"<style>{STYLESHEET}</style>"),
    ]
    page = el("html",
              el("head", head),
              el("body",
                 el("header", el("h1", title), el("span", subtitle, class_="sub")),
                 el("main", body),
                 el("footer", footer) if footer else None),
              lang="en")
    return "<!DOCTYPE html>\n" + page + "\n"


def badge(text: str, kind: str) -> Markup:
    """A small coloured label; ``kind`` picks the colour (create, update, delete, conflict, ok, ...)."""
    return el("span", text, class_=f"badge b-{kind}")


def fact(key: str, value: object, title: str | None = None) -> Markup:
    return el("div", el("div", key, class_="k"), el("div", value, class_="v", title=title), class_="fact")


def section(heading: str, *content: object, id_: str | None = None) -> Markup:
    return el("section", el("h2", heading), *content, id=id_)

