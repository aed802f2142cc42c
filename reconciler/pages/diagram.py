"""The map as an inline SVG drawn on the server: hostnames -> tunnel -> Service IPs -> nodes.

Four columns of boxes joined by curves. An IP is joined to the node that answers for it while
that node is alive (solid) and, in a small picture, to the standby candidates (dashed). Big
clusters are cut to the first boxes of each column, with a "+ N more" line: the tables below
list everything.
No script and no ``style`` attribute: colours come from the page's stylesheet classes, and
every label goes through the same escaping as the rest of the page.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.pages.markup import Markup, el
from reconciler.pages.network import NetworkView

MAX_PER_COLUMN = 24
STANDBY_EDGES_UP_TO = 8  # IPs drawn; past this, dashed lines to every standby node are only clutter
BOX_W, BOX_H, GAP_Y, GAP_X = 230, 24, 8, 66
TOP = 30  # room for the column titles
CHARS = 30  # what fits in a box at 12px monospace
COLUMNS = ("hostnames", "tunnels", "Service IPs", "nodes")


@dataclass(frozen=True)
class _Box:
    key: str
    label: str
    title: str
    kind: str  # host, tunnel, ip, node


def _short(text: str) -> str:
    return text if len(text) <= CHARS else text[: CHARS - 1] + "\u2026"


def _layout(view: NetworkView) -> tuple[list[list[_Box]], list[tuple[str, str, bool]], list[int]]:
    """Boxes per column, edges (from key, to key, standby?), and how many were left out per column."""
    hosts: list[_Box] = []
    tunnels: list[_Box] = []
    edges: list[tuple[str, str, bool]] = []
    reached: dict[str, list[str]] = {}  # Service key -> the tunnels' box keys that reach it
    for tunnel in view.tunnels:
        tkey = f"t:{tunnel.name}"
        tunnels.append(_Box(tkey, f"{tunnel.name} ({tunnel.mode})", f"tunnel {tunnel.name} {tunnel.ident}", "tunnel"))
        for rule in tunnel.rules:
            if rule.hostname is None:
                continue
            label = rule.hostname + (rule.path or "")
            hkey = f"h:{tunnel.name}:{label}"
            hosts.append(_Box(hkey, label, f"{label} -> {rule.target}", "host"))
            edges.append((hkey, tkey, False))
            if rule.service:
                reached.setdefault(rule.service, []).append(tkey)
    # IPs reached through a tunnel first: they are the point of the picture.
    services = sorted(view.services, key=lambda s: (s.key not in reached, s.key))
    ips: list[_Box] = []
    nodes_used: set[str] = set()
    for service in services:
        for ip in service.ips:
            ikey = f"i:{ip}"
            ips.append(_Box(ikey, f"{ip} {service.key}", f"{ip} {service.key} (pool {service.pool})", "ip"))
            edges.extend((tkey, ikey, False) for tkey in reached.get(service.key, ()))
            for rank, node in enumerate(service.candidates.get(ip, ())):
                edges.append((ikey, f"n:{node}", rank > 0))
                nodes_used.add(node)
    nodes = [_Box(f"n:{n.name}", n.name if n.address is None else f"{n.name} {n.address}",
                  f"node {n.name}: answers for {n.first_for} IP(s)", "node")
             for n in view.nodes if n.name in nodes_used or not nodes_used]
    columns = [hosts, tunnels, ips, nodes]
    left_out = [max(0, len(c) - MAX_PER_COLUMN) for c in columns]
    return [c[:MAX_PER_COLUMN] for c in columns], edges, left_out


def render_diagram(view: NetworkView) -> Markup:
    """The SVG element (an empty-state sentence when there is nothing to draw)."""
    columns, edges, left_out = _layout(view)
    if not any(columns):
        return el("p", "Nothing exposed yet.", class_="muted")
    rows = max(len(c) + (1 if more else 0) for c, more in zip(columns, left_out, strict=True))
    width = len(COLUMNS) * BOX_W + (len(COLUMNS) - 1) * GAP_X + 2
    height = TOP + rows * (BOX_H + GAP_Y) + 4
    where: dict[str, tuple[int, int]] = {}
    shapes: list[Markup] = []
    for col, (boxes, title) in enumerate(zip(columns, COLUMNS, strict=True)):
        x = 1 + col * (BOX_W + GAP_X)
        shapes.append(el("text", title, x=x, y=16, class_="d-col"))
        for row, box in enumerate(boxes):
            y = TOP + row * (BOX_H + GAP_Y)
            where[box.key] = (x, y)
            shapes.append(el("g",
                             el("title", box.title),
                             el("rect", x=x, y=y, width=BOX_W, height=BOX_H, rx=5, class_=f"d-box d-{box.kind}"),
                             el("text", _short(box.label), x=x + 8, y=y + 16, class_="d-text")))
        if left_out[col]:
            y = TOP + len(boxes) * (BOX_H + GAP_Y) + 16
            shapes.append(el("text", f"+ {left_out[col]} more (see the tables)", x=x + 8, y=y, class_="d-more"))
    lines: list[Markup] = []
    show_standby = len(columns[2]) <= STANDBY_EDGES_UP_TO
    for start, end, standby in edges:
        if start not in where or end not in where or (standby and not show_standby):
            continue
        (x1, y1), (x2, y2) = where[start], where[end]
        x1, x2, y1, y2 = x1 + BOX_W, x2, y1 + BOX_H // 2, y2 + BOX_H // 2
        mid = (x1 + x2) // 2
        lines.append(el("path", d=f"M{x1} {y1}C{mid} {y1} {mid} {y2} {x2} {y2}",
                        class_="d-standby" if standby else "d-edge"))
    # Solid edges over dashed ones, boxes over both.
    lines.sort(key=lambda m: "d-edge" in m)
    return el("svg", lines, shapes, xmlns="http://www.w3.org/2000/svg", width=width, height=height,
              viewBox=f"0 0 {width} {height}", role="img",
              aria_label="hostnames to tunnels to Service IPs to nodes")
