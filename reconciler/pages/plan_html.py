"""The plan as HTML: the changes table of the status page, and `portside diff --format html`."""

from __future__ import annotations

from reconciler.pages.document import badge, document, section
from reconciler.pages.markup import Markup, el
from reconciler.planning.plan import Change, Plan
from reconciler.planning.render import _field_lines, summary_line

# Lines of before -> after shown per change; the text and JSON renderings have them all.
FIELD_LINES = 12


def _change_row(change: Change) -> Markup:
    lines = _field_lines(change)
    shown = [el("div", line, class_="field") for line in lines[:FIELD_LINES]]
    if len(lines) > FIELD_LINES:
        shown.append(el("div", f"... {len(lines) - FIELD_LINES} more line(s)", class_="field"))
    return el("tr",
              el("td", badge(change.action, change.action), class_="act"),
              el("td", el("code", change.target.kind), " ", el("code", change.target.id)),
              el("td", shown),
              el("td", change.reason, class_="reason"),
              class_="conflict" if change.action == "conflict" else None)


def plan_summary(plan: Plan) -> Markup:
    counts = plan.summary()
    badges = [badge(f"{counts[a]} {a}", a if counts[a] else "muted") for a in ("create", "update", "delete",
                                                                              "conflict")]
    return el("p", el("strong", summary_line(plan)), " ", badges)


def changes_table(plan: Plan, limit: int | None = None) -> Markup:
    """The visible changes in apply order (at most ``limit``, saying how many were left out)."""
    visible = plan.visible
    rows = visible if limit is None else visible[:limit]
    if not rows:
        return el("p", "Nothing to change.", class_="muted")
    table = el("table",
               el("thead", el("tr", el("th", "action"), el("th", "target"), el("th", "change"), el("th", "reason"))),
               el("tbody", [_change_row(c) for c in rows]),
               class_="changes")
    more = len(visible) - len(rows)
    note = el("p", f"... and {more} more change(s): `portside diff` shows them all.", class_="muted") if more else None
    return Markup(table + (note or ""))


def warnings_list(warnings: tuple[str, ...] | list[str]) -> Markup | None:
    if not warnings:
        return None
    return el("ul", [el("li", w) for w in warnings], class_="plain warnings")


def render_plan_page(plan: Plan) -> str:
    """A whole page for one plan (a CI artifact), in the status page's look."""
    revision = plan.revision or "(no revision)"
    body = [
        section("Plan", plan_summary(plan), changes_table(plan)),
        section("Warnings", warnings_list(plan.warnings)) if plan.warnings else None,
    ]
    return document("portside plan", f"revision {revision}", el("div", body),
                    footer="rendered by portside diff --format html")
