"""The status page of `portside run`: what Git describes, and what the controller made of it.

:func:`render_status_page` takes the ``/status`` document and the :class:`NetworkView` of the
last applied reconcile (None before the first one) and returns the whole page. It never sees a
secret: the status document and the view hold none (tokens, webhook and heartbeat keys and
credentials files stay in the shells that read them).
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.desired.state import DesiredState
from reconciler.pages.diagram import render_diagram
from reconciler.pages.document import badge, document, fact, section
from reconciler.pages.links import file_url, repository_web_url, split_location
from reconciler.pages.markup import Markup, el, join
from reconciler.pages.network import FamilyUsage, NetworkView, PoolView, ServiceView, TunnelView, network_view
from reconciler.pages.plan_html import changes_table, warnings_list
from reconciler.planning.live import LiveState
from reconciler.planning.plan import Plan

REFRESH_SECONDS = 15
PLAN_ROWS = 100  # changes of the last plan shown on the page
BAR_W, BAR_H = 180, 10


def render_status_page(status: Mapping[str, Any], view: NetworkView | None, plan: Plan | None, *,
                       now: float, refresh_seconds: int = REFRESH_SECONDS,
                       network: Markup | None = None) -> str:
    """The whole page. ``now`` (Unix time) is passed in so the page is a pure function of its inputs;
    ``network`` is :func:`network_sections` of ``view`` and ``plan`` when the caller kept it."""
    source = str(status.get("source") or "")
    body = [_overview(status, view, now), _errors(status, source),
            network if network is not None else network_sections(view, plan)]
    return document("portside", source or "no source", el("div", body), refresh_seconds=refresh_seconds,
                    footer=f"refreshes every {refresh_seconds}s \u00b7 read-only \u00b7 {_utc(now)}")


def network_sections(view: NetworkView | None, plan: Plan | None) -> Markup:
    """Everything below the controller's facts: it changes only when a reconcile is applied."""
    if view is None:
        body = [section("Network", el("p", "No reconcile has been applied yet; this page fills in once one has.",
                                      class_="muted"))]
    else:
        body = [
            section("Map", el("div", render_diagram(view), class_="diagram"), id_="map"),
            section("Pools", _pools(view.pools), _advertisements(view), id_="pools"),
            section(f"Services ({len(view.services)}, {view.pending} pending or in conflict)",
                    _services(view.services), id_="services"),
            section("Tunnels", _tunnels(view.tunnels), id_="tunnels"),
            section("DNS records", _records(view), id_="dns"),
        ]
        if view.warnings:
            body.append(section("Warnings", warnings_list(view.warnings), id_="warnings"))
    if plan is not None:
        body.append(section("Last plan", changes_table(plan, limit=PLAN_ROWS), id_="plan"))
    return join(body)


class StatusPage:
    """The page for the controller's kept reconcile result (anything with ``plan``, ``desired`` and
    ``live``, as :class:`~reconciler.planning.engine.ReconcileResult` has; None before the first).

    The network part is built once per result and reused until the next one: a page view then
    costs the controller's facts only, however often it is asked for (a stranger may ask a lot).
    """

    def __init__(self, refresh_seconds: int = REFRESH_SECONDS) -> None:
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._kept: tuple[object, NetworkView | None, Markup] | None = None

    def _network(self, outcome: object) -> tuple[NetworkView | None, Markup]:
        with self._lock:
            if self._kept is not None and self._kept[0] is outcome:
                return self._kept[1], self._kept[2]
            plan = getattr(outcome, "plan", None)
            desired, live = getattr(outcome, "desired", None), getattr(outcome, "live", None)
            plan = plan if isinstance(plan, Plan) else None
            view = (network_view(desired, live, plan)
                    if plan is not None and isinstance(desired, DesiredState) and isinstance(live, LiveState)
                    else None)
            network = network_sections(view, plan)
            self._kept = (outcome, view, network)  # holding the result keeps its identity unique
            return view, network

    def render(self, status: Mapping[str, Any], outcome: object, *, now: float) -> str:
        view, network = self._network(outcome)
        return render_status_page(status, view, None, now=now, refresh_seconds=self.refresh_seconds,
                                  network=network)


# --- the controller ------------------------------------------------------------------------------


def _utc(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(ts: float, now: float) -> str:
    seconds = max(0, int(now - ts))
    if seconds < 90:
        return f"{seconds}s ago"
    if seconds < 5400:
        return f"{seconds // 60}m ago"
    if seconds < 172800:
        return f"{seconds // 3600}h ago"
    return f"{seconds // 86400}d ago"


def _revision(value: object) -> Markup:
    if not value:
        return el("span", "none yet", class_="muted")
    text = str(value)
    return el("code", text[:12], title=text)


def _overview(status: Mapping[str, Any], view: NetworkView | None, now: float) -> Markup:
    applied, attempted = status.get("lastAppliedRevision"), status.get("lastAttemptedRevision")
    when = status.get("lastReconcileTime")
    summary = status.get("lastPlanSummary")
    if isinstance(summary, Mapping):
        counts = [badge(f"{summary.get(a, 0)} {a}", a if summary.get(a) else "muted")
                  for a in ("create", "update", "delete", "conflict")]
        plan_fact: object = counts
    else:
        plan_fact = el("span", "none yet", class_="muted")
    behind = attempted and attempted != applied
    facts = [
        fact("applied revision", _revision(applied)),
        fact("attempted revision", [_revision(attempted), " ", badge("not applied", "bad") if behind else None]),
        fact("last reconcile", f"{_ago(float(when), now)} ({_utc(float(when))})"
             if isinstance(when, int | float) else el("span", "not yet", class_="muted")),
        fact("last plan", plan_fact),
        fact("leader", [badge("leader", "ok") if status.get("leader") else badge("standby", "muted"), " ",
                        str(status.get("identity") or "")]),
    ]
    if view is not None:
        ips = sum(len(s.ips) for s in view.services)
        facts.append(fact("exposed", f"{len(view.services)} Service(s), {ips} IP(s), "
                                     f"{sum(len(t.rules) for t in view.tunnels)} tunnel rule(s)"))
    return section("Controller", el("div", facts, class_="grid"), id_="controller")


def _error_item(line: str, repository: str | None, revision: str | None) -> Markup:
    located = split_location(line)
    if located and repository and revision:
        file, number, rest = located
        url = file_url(repository, revision, file, number)
        if url is not None:
            return el("li", el("a", f"{file}", href=url, rel="noreferrer"), rest)
    return el("li", line)


def _errors(status: Mapping[str, Any], source: str) -> Markup:
    errors = [str(e) for e in status.get("errors") or ()]
    if not errors:
        return section("Errors", el("p", badge("none", "ok"), class_="muted"), id_="errors")
    # "git <url> ref <ref>": the URL is credential-free (the source strips user info).
    words = source.split()
    repository = repository_web_url(words[1]) if len(words) > 1 and words[0] == "git" else None
    revision = status.get("lastAttemptedRevision")
    items = [_error_item(e, repository, str(revision) if revision else None) for e in errors]
    return section(f"Errors ({len(errors)})", el("ul", items, class_="plain errors"), id_="errors")


# --- the network ---------------------------------------------------------------------------------


def _count(n: int) -> str:
    return f"{n:,}" if n < 10**9 else f"2^{n.bit_length() - 1}+"


def _bar(usage: FamilyUsage) -> Markup:
    fraction = usage.used / usage.size if usage.size else 1.0
    filled = round(BAR_W * min(1.0, fraction))
    if usage.used and not filled:
        filled = 1  # one IP in a /64 still shows
    return el("svg",
              el("title", f"{usage.used} of {usage.size} used"),
              el("rect", width=BAR_W, height=BAR_H, rx=3, class_="track"),
              el("rect", width=filled, height=BAR_H, rx=3, class_="full" if fraction >= 1 else "used"),
              width=BAR_W, height=BAR_H, class_="bar", role="img",
              aria_label=f"{usage.family}: {usage.used} of {usage.size} addresses used")


def _pool(pool: PoolView) -> Markup:
    families = [el("div", el("span", f.family, class_="label"), _bar(f),
                   el("span", f"{_count(f.used)} / {_count(f.size)}", class_="count"), class_="family")
                for f in pool.families]
    advertised = (["advertised by ", ", ".join(pool.advertised_by)] if pool.advertised_by
                  else [badge("not advertised", "warn"), " no L2Advertisement selects it"])
    return el("div",
              el("div", pool.name, class_="name"),
              el("div", el("code", ", ".join(pool.addresses)), class_="muted"),
              families,
              el("div", advertised, " \u00b7 autoAssign " + ("on" if pool.auto_assign else "off"), class_="reason"),
              class_="pool")


def _pools(pools: Sequence[PoolView]) -> Markup:
    if not pools:
        return el("p", "No IPAddressPool declared.", class_="muted")
    return el("div", [_pool(p) for p in pools], class_="pools")


def _advertisements(view: NetworkView) -> Markup:
    if not view.advertisements:
        return el("p", "No L2Advertisement declared: no IP is announced.", class_="muted")
    rows = [el("tr",
               el("td", a.name),
               el("td", ", ".join(a.pools) or el("span", "none", class_="muted")),
               el("td", ", ".join(a.interfaces) or el("span", "all", class_="muted")),
               el("td", "; ".join(a.node_selectors) or el("span", "every node", class_="muted")),
               el("td", ", ".join(a.nodes) or el("span", "none", class_="muted")))
            for a in view.advertisements]
    return Markup(el("h3", "L2 advertisements") + _table(("name", "pools", "interfaces", "node selectors",
                                                          "nodes now"), rows))


def _table(headings: Sequence[str], rows: Sequence[Markup]) -> Markup:
    return el("table", el("thead", el("tr", [el("th", h) for h in headings])), el("tbody", rows))


def _announcers(service: ServiceView) -> list[Markup]:
    out = []
    for ip in service.ips:
        nodes = service.candidates.get(ip, ())
        if not nodes:
            nobody = badge("nobody", "bad")
            out.append(el("div", nobody if len(service.ips) == 1 else [ip, " ", nobody]))
            continue
        head = el("strong", nodes[0])
        rest = el("span", " then " + ", ".join(nodes[1:4]) + (" \u2026" if len(nodes) > 4 else ""),
                  class_="next") if len(nodes) > 1 else None
        out.append(el("div", head, rest, title=f"{ip}: " + " > ".join(nodes)))
    return out


def _service_row(service: ServiceView) -> Markup:
    state = None if service.state == "ok" else badge(service.state, "warn" if service.state == "pending"
                                                     else "conflict")
    return el("tr",
              el("td", el("code", service.key), el("div", service.reason, class_="reason") if service.reason else None),
              el("td", [el("div", el("code", ip)) for ip in service.ips] or state),
              el("td", service.pool or "\u2014"),
              el("td", _announcers(service)),
              el("td", service.traffic_policy),
              el("td", [el("div", h) for h in service.hostnames]),
              class_=None if service.state == "ok" else service.state)


def _services(services: Sequence[ServiceView]) -> Markup:
    if not services:
        return el("p", "No Service is exposed.", class_="muted")
    return _table(("Service", "IPs", "pool", "answered by (then)", "traffic policy", "hostnames"),
                  [_service_row(s) for s in services])


def _tunnel(tunnel: TunnelView) -> Markup:
    rows = [el("tr",
               el("td", str(i)),
               el("td", (rule.hostname + (rule.path or "")) if rule.hostname else el("em", "catch-all")),
               el("td", el("code", rule.target)),
               el("td", rule.service or "\u2014"))
            for i, rule in enumerate(tunnel.rules, start=1)]
    head = el("h3", tunnel.name, " ", badge(tunnel.mode, "muted"), " ",
              badge("conflict", "conflict") if tunnel.state != "ok" else None)
    facts = el("div", fact("tunnel", el("code", tunnel.ident)), fact("portside", tunnel.status),
               fact("connector", tunnel.connector), class_="grid")
    reason = el("p", tunnel.reason, class_="reason") if tunnel.reason else None
    table = _table(("#", "hostname", "target", "Service"), rows) if rows else el("p", "No rules.", class_="muted")
    return Markup(head + facts + (reason or "") + table)


def _tunnels(tunnels: Sequence[TunnelView]) -> Markup:
    if not tunnels:
        return el("p", "No Tunnel declared.", class_="muted")
    return Markup("".join(_tunnel(t) for t in tunnels))


def _records(view: NetworkView) -> Markup:
    if not view.records:
        return el("p", "No DNS record managed (local tunnels without Cloudflare DNS, or no routes).",
                  class_="muted")
    rows = [el("tr",
               el("td", el("code", r.hostname), el("div", r.reason, class_="reason") if r.reason else None),
               el("td", r.zone),
               el("td", el("code", r.content)),
               el("td", badge("owned", "ok") if r.state == "ok" else badge("conflict", "conflict")),
               class_=None if r.state == "ok" else "conflict")
            for r in view.records]
    return _table(("record", "zone", "points to", "state"), rows)

