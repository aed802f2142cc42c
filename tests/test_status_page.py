"""The status page and `diff --format html`: content read back through html.parser, escaping, headers.

The example repo goes through the real controller loop, the local backend and `portside run`'s
HTTP routes; hostile text arrives the ways a user or a cluster can send it (a YAML value, an
error message, a Service annotation) and must come out as text, never as markup.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from reconciler.backends.local import LocalBackend
from reconciler.cli import main
from reconciler.common.httpserve import HTTPService
from reconciler.controller.loop import Controller, Trigger
from reconciler.controller.server import controller_routes
from reconciler.controller.status import ControllerMetrics, StatusBoard
from reconciler.desired.models import IPAddressPool, L2Advertisement, ServiceExposure, Tunnel, TunnelRoute
from reconciler.desired.state import DesiredState
from reconciler.pages.links import file_url, repository_web_url, split_location
from reconciler.pages.network import network_view
from reconciler.pages.status_page import StatusPage, render_status_page
from reconciler.pages.style import CONTENT_SECURITY_POLICY, STYLE_HASH
from reconciler.planning.announcement_table import rank_candidates
from reconciler.planning.engine import ApplyPolicy, ReconcileResult, reconcile
from reconciler.planning.live import (
    METALLB_LOADBALANCER_IPS,
    DNSRecord,
    LiveConnectors,
    LiveNode,
    LiveService,
    LiveState,
    LiveZone,
    ServicePort,
)
from reconciler.planning.planner import make_plan
from reconciler.source import Checkout
from reconciler.source.directory import DirectorySource

EXAMPLE = Path(__file__).resolve().parents[1] / "example-repo"
NODES = {"node-a": {"address": "192.168.1.10"}, "node-b": {"address": "192.168.1.11"},
         "node-c": {"address": "192.168.1.12"}}
WEBHOOK_SECRET = b"hook-secret-never-shown"
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'


class Page(HTMLParser):
    """Tags, attributes, text, and every table as rows of cell texts."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.style = ""
        self._cell: list[str] | None = None
        self._in_style = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "style":
            self._in_style = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1][-1].append(" ".join(" ".join(self._cell).split()))
            self._cell = None
        elif tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style += data
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def table(self, *headings: str) -> list[list[str]]:
        """The body rows of the first table with these headings."""
        for table in self.tables:
            if table and [h.lower() for h in table[0]] == [h.lower() for h in headings]:
                return table[1:]
        raise AssertionError(f"no table with headings {headings}: {[t[0] for t in self.tables if t]}")

    @property
    def all_text(self) -> str:
        return "".join(self.text)

    def assert_inert(self) -> None:
        """No script, no handler attribute, no style attribute, no image, no external reference."""
        for tag, attrs in self.tags:
            assert tag not in ("script", "img", "iframe", "object", "embed", "link", "base"), (tag, attrs)
            for name, value in attrs.items():
                assert not name.startswith("on") and name != "style", (tag, attrs)
                if name in ("href", "src", "xlink:href", "action"):
                    assert value is None or value.startswith("https://"), (tag, attrs)


def write_nodes(state: Path) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / "state.json").write_text(json.dumps({"version": 1, "services": {}, "nodes": NODES}))


@contextmanager
def serving(board: StatusBoard) -> Iterator[str]:
    routes = controller_routes(board, ControllerMetrics(), webhook_secret=WEBHOOK_SECRET,
                               on_push=lambda _: None, ready=lambda: True)
    server = HTTPService("127.0.0.1:0", routes).start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def get(url: str) -> tuple[int, dict[str, str], str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, dict(response.headers.items()), response.read().decode()


def run_controller(repo: Path, tmp: Path, source_label: str = "") -> StatusBoard:
    """One startup step of the real controller loop over ``repo`` against a local state directory."""
    state = tmp / "state"
    write_nodes(state)
    backend = LocalBackend(state)
    source = DirectorySource(repo, cache_dir=tmp / "cache")
    board = StatusBoard(source=source_label or source.describe(), identity="portside-0")

    def reconcile_checkout(checkout: Checkout) -> ReconcileResult:
        return reconcile(checkout.root, backend, checkout.revision, policy=ApplyPolicy())

    Controller(source, reconcile_checkout, status=board).step(frozenset({Trigger.STARTUP}))
    return board


# --- the example repo, served by `portside run`'s routes ---------------------------------------


def test_the_example_page(tmp_path: Path) -> None:
    board = run_controller(EXAMPLE, tmp_path)
    with serving(board) as base:
        status, headers, text = get(base + "/")
        _, _, status_json = get(base + "/status")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY and "script-src" not in CONTENT_SECURITY_POLICY
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    page = Page(text)
    page.assert_inert()
    # The one stylesheet is exactly the one the policy allows by hash.
    digest = "sha256-" + base64.b64encode(hashlib.sha256(page.style.encode()).digest()).decode()
    assert digest == STYLE_HASH and f"'{digest}'" in headers["Content-Security-Policy"]
    assert ("meta", {"http-equiv": "refresh", "content": "15"}) in page.tags

    first, *rest = rank_candidates(NODES, "192.168.1.100")
    assert page.table("Service", "IPs", "pool", "answered by (then)", "traffic policy", "hostnames") == [
        ["default/blog", "192.168.1.100", "home-pool", f"{first} then {', '.join(rest)}", "Cluster",
         "blog.example.dev"]]
    assert page.table("#", "hostname", "target", "Service") == [
        ["1", "blog.example.dev", "http://192.168.1.100:80", "default/blog"],
        ["2", "catch-all", "http_status:404", "\u2014"]]
    assert page.table("name", "pools", "interfaces", "node selectors", "nodes now") == [
        ["home", "home-pool", "all", "every node", "node-a, node-b, node-c"]]
    changes = page.table("action", "target", "change", "reason")
    assert [row[0] for row in changes] == ["create"] * 4
    assert changes[0][1] == "Service default/blog"
    text_only = page.all_text
    assert "1 / 357" in text_only  # 192.168.1.100-192.168.2.200, one used
    assert "6ff42ae2-765d-4adf-8112-31c55c1551ef" in text_only
    revision = board.snapshot()["lastAppliedRevision"]
    assert revision[:12] in text_only
    # The map: one box per hostname, tunnel, IP and node, in one inline SVG.
    svg_texts = [t for t in page.text if t.startswith(("blog.example.dev", "home (local)", "192.168.1.100 "))]
    assert len(svg_texts) >= 3
    # No secret: not the webhook secret, not the tunnel's credentials file.
    assert WEBHOOK_SECRET.decode() not in text and "credentials" not in text.lower()
    # /status keeps its contract.
    document = json.loads(status_json)
    assert {"lastAttemptedRevision", "lastAppliedRevision", "lastPlanSummary", "errors", "leader"} <= set(document)
    assert document["lastPlanSummary"] == {"create": 4, "update": 0, "delete": 0, "conflict": 0}


def test_the_page_before_the_first_reconcile() -> None:
    with serving(StatusBoard(source="directory x")) as base:
        status, _, text = get(base + "/")
    page = Page(text)
    page.assert_inert()
    assert status == 200 and "No reconcile has been applied yet" in page.all_text


# --- hostile text ------------------------------------------------------------------------------


HOSTILE_ROUTE = f"""---
apiVersion: portside.io/v1alpha1
kind: TunnelRoute
metadata:
  name: hostile
spec:
  tunnel: home
  hostname: evil.example.dev
  path: "/{SCRIPT}"
  url: "http://10.0.0.1:8080{{url_path}}"
"""


def hostile_repo(tmp: Path, url_path: str) -> Path:
    repo = tmp / "repo"
    shutil.copytree(EXAMPLE, repo)
    with (repo / "tunnel" / "routes.yaml").open("a") as f:
        f.write(HOSTILE_ROUTE.replace("{url_path}", url_path.replace('"', '\\"')))
    return repo


def test_a_hostile_yaml_value_is_text(tmp_path: Path) -> None:
    board = run_controller(hostile_repo(tmp_path, ""), tmp_path)
    assert board.snapshot()["errors"] == []
    with serving(board) as base:
        _, _, text = get(base + "/")
    page = Page(text)
    page.assert_inert()
    rules = page.table("#", "hostname", "target", "Service")
    assert ["2", f"evil.example.dev/{SCRIPT}", "http://10.0.0.1:8080", "\u2014"] in rules
    assert SCRIPT not in text  # only its escaped form is in the markup


def test_a_hostile_error_message_is_text_and_links_stay_clean(tmp_path: Path) -> None:
    repo = hostile_repo(tmp_path, "/" + IMG)
    board = run_controller(repo, tmp_path, source_label="git https://github.com/me/homelab.git ref main")
    errors = board.snapshot()["errors"]
    assert errors and IMG in errors[0]
    board.update(lastAttemptedRevision="0123456789abcdef0123456789abcdef01234567")
    with serving(board) as base:
        _, _, text = get(base + "/")
    page = Page(text)
    page.assert_inert()
    assert IMG in page.all_text and IMG not in text
    links = [attrs["href"] for tag, attrs in page.tags if tag == "a"]
    assert links == ["https://github.com/me/homelab/blob/0123456789abcdef0123456789abcdef01234567/"
                     "tunnel/routes.yaml#L25"]


def desired_for(services: int, *, nodes: int = 5, routes: int | None = None) -> DesiredState:
    """A cluster's repo in memory: one /20 pool, one advertisement, a local tunnel with routes."""
    pool = IPAddressPool.model_validate({"apiVersion": "portside.io/v1alpha1", "kind": "IPAddressPool",
                                         "metadata": {"name": "lan"}, "spec": {"addresses": ["10.1.0.0/20"]}})
    ad = L2Advertisement.model_validate({"apiVersion": "portside.io/v1alpha1", "kind": "L2Advertisement",
                                         "metadata": {"name": "all"}})
    tunnel = Tunnel.model_validate({"apiVersion": "portside.io/v1alpha1", "kind": "Tunnel",
                                    "metadata": {"name": "home"},
                                    "spec": {"mode": "local", "tunnelId": "6ff42ae2-765d-4adf-8112-31c55c1551ef"}})
    exposures = tuple(ServiceExposure.model_validate({
        "apiVersion": "portside.io/v1alpha1", "kind": "ServiceExposure", "metadata": {"name": f"svc-{i:04d}"},
        "spec": {"service": {"namespace": f"ns-{i % 20}", "name": f"svc-{i:04d}"}, "pool": "lan"}})
        for i in range(services))
    route_docs = tuple(TunnelRoute.model_validate({
        "apiVersion": "portside.io/v1alpha1", "kind": "TunnelRoute", "metadata": {"name": f"r-{i:04d}"},
        "spec": {"tunnel": "home", "hostname": f"app-{i:04d}.example.dev",
                 "service": {"namespace": f"ns-{i % 20}", "name": f"svc-{i:04d}", "port": 80}}})
        for i in range(services if routes is None else routes))
    return DesiredState(pools=(pool,), advertisements=(ad,), exposures=exposures, tunnels=(tunnel,),
                        routes=route_docs, revision="0123456789abcdef0123456789abcdef01234567")


def live_for(desired: DesiredState, *, nodes: int = 5,
             annotations: dict[str, dict[str, str]] | None = None) -> LiveState:
    services = tuple(LiveService(namespace=e.spec.service.namespace, name=e.spec.service.name,
                                 ports=(ServicePort(80),),
                                 annotations=(annotations or {}).get(e.spec.service.key, {}))
                     for e in desired.exposures)
    return LiveState(services=services,
                     nodes=tuple(LiveNode(f"node-{n}", address=f"192.168.1.{10 + n}") for n in range(nodes)))


def test_a_hostile_annotation_is_text() -> None:
    desired = desired_for(3)
    live = live_for(desired, annotations={"ns-1/svc-0001": {METALLB_LOADBALANCER_IPS: SCRIPT + IMG}})
    plan = make_plan(desired, live)
    view = network_view(desired, live, plan)
    text = render_status_page({"source": "directory x", "errors": [SCRIPT]}, view, plan, now=0.0)
    page = Page(text)
    page.assert_inert()
    rows = page.table("Service", "IPs", "pool", "answered by (then)", "traffic policy", "hostnames")
    pending = [row for row in rows if row[0].startswith("ns-1/svc-0001")]
    assert len(pending) == 1 and SCRIPT + IMG in pending[0][0] and pending[0][1] == "pending"
    pending_rows = [attrs for tag, attrs in page.tags if tag == "tr" and attrs.get("class") == "pending"]
    assert len(pending_rows) == 1
    assert SCRIPT not in text and IMG not in text


# --- links -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "web"), [
    ("https://github.com/me/lab.git", "https://github.com/me/lab"),
    ("https://x-access-token:ghp_secret@github.com/me/lab.git", "https://github.com/me/lab"),
    ("https://git.home.lan:3000/me/lab", "https://git.home.lan:3000/me/lab"),
    ("git@github.com:me/lab.git", "https://github.com/me/lab"),
    ("ssh://git@gitlab.com/group/sub/lab.git", "https://gitlab.com/group/sub/lab"),
    ("git@git.home.lan:me/lab.git", None),  # an SSH host whose web UI is unknown
    ("file:///srv/lab.git", None),
    ("http://github.com/me/lab.git", None),  # never link a page over plain HTTP
    ('https://github.com/me/"><img src=x>', None),
])
def test_repository_web_url(source: str, web: str | None) -> None:
    assert repository_web_url(source) == web


def test_file_urls() -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert file_url("https://github.com/me/lab", sha, "deploy/pools.yaml", 7) == \
        f"https://github.com/me/lab/blob/{sha}/deploy/pools.yaml#L7"
    assert file_url("https://gitlab.com/me/lab", sha, "a b.yaml", 1) == \
        f"https://gitlab.com/me/lab/-/blob/{sha}/a%20b.yaml#L1"
    assert file_url("https://codeberg.org/me/lab", sha, "p.yaml", 2) == \
        f"https://codeberg.org/me/lab/src/commit/{sha}/p.yaml#L2"
    assert file_url("https://github.com/me/lab", "dir-9d90dd09", "p.yaml", 2) is None  # not a commit
    assert file_url("https://github.com/me/lab", sha, "../etc/passwd", 2) is None
    assert split_location("deploy/pools.yaml:7:5: spec.addresses[0]: bad") == \
        ("deploy/pools.yaml", 7, ":7:5: spec.addresses[0]: bad")
    assert split_location("Cloudflare: HTTP 500") is None


# --- scale -------------------------------------------------------------------------------------


def test_a_thousand_services_fit_in_a_page() -> None:
    desired = desired_for(1000)
    live = live_for(desired)
    plan = make_plan(desired, live)
    text = render_status_page({"source": "git https://github.com/me/lab.git ref main", "errors": []},
                              network_view(desired, live, plan), plan, now=0.0)
    assert len(text.encode()) < 1024 * 1024
    page = Page(text)
    page.assert_inert()
    rows = page.table("Service", "IPs", "pool", "answered by (then)", "traffic policy", "hostnames")
    assert len(rows) == 1000 and all(row[1].startswith("10.1.") for row in rows)
    assert "1,000 / 4,096" in page.all_text
    assert "+ 976 more (see the tables)" in page.all_text  # the map shows the first 24 per column
    assert "... and " in page.all_text  # the plan is cut on the page; `portside diff` has it all


# --- diff --format html --------------------------------------------------------------------------


def test_diff_format_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_nodes(tmp_path / "state")
    assert main(["diff", str(EXAMPLE), "--state", str(tmp_path / "state"), "--format", "html",
                 "--exit-code"]) == 2
    page = Page(capsys.readouterr().out)
    page.assert_inert()
    changes = page.table("action", "target", "change", "reason")
    assert [(row[0], row[1]) for row in changes] == [
        ("create", "Service default/blog"), ("create", "Announcement 192.168.1.100"),
        ("create", "Announcement (nodes)"), ("create", "TunnelConfiguration home")]
    assert "Plan: 4 to create, 0 to update, 0 to delete, 0 conflict(s)." in page.all_text
    assert main(["apply", str(EXAMPLE), "--state", str(tmp_path / "state")]) == 0
    capsys.readouterr()
    assert main(["diff", str(EXAMPLE), "--state", str(tmp_path / "state"), "--format", "html"]) == 0
    converged = Page(capsys.readouterr().out)
    assert "Nothing to change." in converged.all_text and not converged.tables


def test_the_page_follows_each_new_reconcile(tmp_path: Path) -> None:
    """The network part is kept between views, and replaced as soon as another reconcile is applied."""
    board = run_controller(EXAMPLE, tmp_path)
    page = StatusPage()
    before = page.render(board.snapshot(), board.outcome(), now=0.0)
    assert page.render(board.snapshot(), board.outcome(), now=0.0) == before
    result = reconcile(hostile_repo(tmp_path, ""), LocalBackend(tmp_path / "state"), "r2", policy=ApplyPolicy())
    board.keep_outcome(result)
    after = page.render(board.snapshot(), board.outcome(), now=0.0)
    assert "evil.example.dev" not in before and "evil.example.dev" in after


def test_dns_records_owned_and_in_conflict() -> None:
    desired = desired_for(3)
    foreign = DNSRecord(zone="example.dev", name="app-0000.example.dev", type="A", content="203.0.113.9",
                        proxied=False, comment=f"hand-made {SCRIPT}", record_id="r1")
    live = replace(live_for(desired), zones={"example.dev": LiveZone("example.dev", "z1", (foreign,))})
    plan = make_plan(desired, live)
    page = Page(render_status_page({"errors": []}, network_view(desired, live, plan), plan, now=0.0))
    page.assert_inert()
    rows = page.table("record", "zone", "points to", "state")
    target = "6ff42ae2-765d-4adf-8112-31c55c1551ef.cfargotunnel.com"
    assert [row[1:] for row in rows] == [["example.dev", "203.0.113.9", "conflict"],
                                         ["example.dev", target, "owned"], ["example.dev", target, "owned"]]
    assert rows[0][0].startswith("app-0000.example.dev a A record not managed by portside exists")
    # Highlighted: the record's row, and the same conflict in the last plan's table.
    assert [attrs.get("class") for tag, attrs in page.tags if tag == "tr" and attrs.get("class")] == \
        ["conflict", "conflict"]


def test_a_remote_tunnel_not_read_shows_its_declared_routes() -> None:
    desired = desired_for(2)
    remote = Tunnel.model_validate({"apiVersion": "portside.io/v1alpha1", "kind": "Tunnel",
                                    "metadata": {"name": "home"},
                                    "spec": {"mode": "remote", "accountId": "acc", "tunnelName": "home"}})
    desired = replace(desired, tunnels=(remote,))
    live = live_for(desired)  # no Cloudflare token: no tunnel read
    plan = make_plan(desired, live)
    page = Page(render_status_page({"errors": []}, network_view(desired, live, plan), plan, now=0.0))
    page.assert_inert()
    assert "not read (no Cloudflare API token)" in page.all_text
    assert page.table("#", "hostname", "target", "Service") == [
        ["1", "app-0000.example.dev", "Service ns-0/svc-0000:80", "ns-0/svc-0000"],
        ["2", "app-0001.example.dev", "Service ns-1/svc-0001:80", "ns-1/svc-0001"]]


def test_the_connector_as_the_last_read_found_it() -> None:
    desired = desired_for(1)
    tunnel = desired.tunnels[0]
    spec = {**tunnel.spec.model_dump(exclude_none=True), "accountId": "acc", "connector": {"where": "cluster"}}
    kept = Tunnel.model_validate({"apiVersion": "portside.io/v1alpha1", "kind": "Tunnel",
                                  "metadata": {"name": tunnel.metadata.name}, "spec": spec})
    desired = replace(desired, tunnels=(kept,))
    found = LiveConnectors(cluster=True, deployments={tunnel.metadata.name: {
        "spec": {"replicas": 2}, "status": {"readyReplicas": 1}}})
    cases = ((live_for(desired), "Deployment in the cluster, not created yet"),
             (replace(live_for(desired), connectors=found), "Deployment in the cluster, 1/2 replicas ready"))
    for live, shown in cases:
        plan = make_plan(desired, live)
        assert [t.connector for t in network_view(desired, live, plan).tunnels] == [shown]
    plain = desired_for(1)
    assert [t.connector for t in network_view(plain, live_for(plain), make_plan(plain, live_for(plain))).tunnels] \
        == ["run by you (not kept by portside)"]
