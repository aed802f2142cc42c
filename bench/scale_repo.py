"""The repos the benchmarks (and the plan-identity test) run on, written as plain YAML text.

One builder, used by bench_scale.py, bench_plan.py, bench_validate.py and
tests/test_plan_identity.py, so every figure and the golden plans come from the same shape.
It imports nothing from ``reconciler``: ``bench_scale.py --compare`` measures another revision of
the code on the very same files.

Issue 13's shape (``ScaleRepo.for_services(n)``): n ServiceExposures with two ports each spread
over 40 namespaces, n*64/10,000 MetalLB pools (a /23 each), one L2Advertisement, one local
tunnel with n/5 TunnelRoutes, and a local state directory declaring 3 nodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TUNNEL_ID = "6ff42ae2-765d-4adf-8112-31c55c1551ef"
DOCUMENTS_PER_FILE = 1000  # keeps every file far below the loader's 1 MiB limit


@dataclass(frozen=True)
class ScaleRepo:
    services: int
    pools: int
    routes: int
    namespaces: int = 40
    ports: int = 2
    nodes: int = 3
    pool_prefix: int = 23  # each pool is one block of this size, laid side by side from 10.0.0.0
    pool_api: str = "metallb.io/v1beta1"
    # Each exposure asks for a fixed address of its pool (the allocator's "requested" pass).
    requested_addresses: bool = False
    # Each route carries an originRequest (more fields to validate and render).
    origin_request: bool = False

    @classmethod
    def for_services(cls, services: int) -> ScaleRepo:
        """Issue 13's repo for ``services`` Services."""
        return cls(services=services, pools=max(1, services * 64 // 10_000), routes=services // 5)

    def write(self, root: Path) -> Path:
        """Write the repo's YAML below ``root`` (created if needed); returns ``root``."""
        root.mkdir(parents=True, exist_ok=True)
        (root / "pools.yaml").write_text("---\n".join([*map(self._pool, range(self.pools)), self._advertisement()]))
        (root / "tunnel.yaml").write_text(self._tunnel())
        _write_chunked(root, "services", [self._exposure(i) for i in range(self.services)])
        _write_chunked(root, "routes", [self._route(i) for i in range(self.routes)])
        return root

    def write_state(self, state_dir: Path) -> Path:
        """A local state directory declaring the nodes (and nothing assigned yet)."""
        state_dir.mkdir(parents=True, exist_ok=True)
        nodes = {f"node-{n}": {"address": f"192.168.1.{10 + n}", "labels": {}} for n in range(self.nodes)}
        (state_dir / "state.json").write_text(json.dumps({"version": 1, "services": {}, "nodes": nodes}))
        return state_dir

    # --- documents ---------------------------------------------------------------------------

    def pool_cidr(self, p: int) -> str:
        return f"{_dotted(self._pool_base(p))}/{self.pool_prefix}"

    def _pool_base(self, p: int) -> int:
        return (10 << 24) + p * (1 << (32 - self.pool_prefix))

    def _pool(self, p: int) -> str:
        return f"""apiVersion: {self.pool_api}
kind: IPAddressPool
metadata:
  name: pool-{p:03d}
  namespace: metallb-system
spec:
  addresses: [{self.pool_cidr(p)}]
"""

    def _advertisement(self) -> str:
        return f"""apiVersion: {self.pool_api}
kind: L2Advertisement
metadata:
  name: all
  namespace: metallb-system
"""

    def _tunnel(self) -> str:
        return f"""apiVersion: portside.io/v1alpha1
kind: Tunnel
metadata:
  name: home
spec:
  mode: local
  tunnelId: {TUNNEL_ID}
  dns:
    zones: [example.dev]
"""

    def _exposure(self, i: int) -> str:
        pool = i % self.pools
        ports = "\n".join(f"  - {{name: p{k}, port: {8080 + k}}}" for k in range(self.ports))
        requested = ""
        if self.requested_addresses:
            # The pool's (i // pools)-th address after the block's first.
            requested = f'\n  addresses: ["{_dotted(self._pool_base(pool) + 1 + i // self.pools)}"]'
        return f"""apiVersion: portside.io/v1alpha1
kind: ServiceExposure
metadata:
  name: svc-{i:05d}
spec:
  service:
    namespace: ns-{i % self.namespaces:02d}
    name: svc-{i:05d}
  pool: pool-{pool:03d}{requested}
  ports:
{ports}
"""

    def _route(self, i: int) -> str:
        origin = ""
        if self.origin_request:
            origin = f"\n  originRequest:\n    httpHostHeader: app-{i:05d}.example.dev\n    connectTimeout: 10s"
        return f"""apiVersion: portside.io/v1alpha1
kind: TunnelRoute
metadata:
  name: route-{i:05d}
spec:
  tunnel: home
  hostname: app-{i:05d}.example.dev
  service:
    namespace: ns-{i % self.namespaces:02d}
    name: svc-{i:05d}
    port: 8080{origin}
"""


def _dotted(value: int) -> str:
    return ".".join(str((value >> shift) & 255) for shift in (24, 16, 8, 0))


def _write_chunked(root: Path, stem: str, documents: list[str]) -> None:
    for start in range(0, len(documents), DOCUMENTS_PER_FILE):
        chunk = documents[start:start + DOCUMENTS_PER_FILE]
        (root / f"{stem}-{start // DOCUMENTS_PER_FILE:03d}.yaml").write_text("---\n".join(chunk))


def write_one_file_repo(root: Path) -> Path:
    """The smallest useful repo: one file, a pool, an advertisement and one exposure (startup cost)."""
    root.mkdir(parents=True, exist_ok=True)
    repo = ScaleRepo(services=1, pools=1, routes=0)
    (root / "portside.yaml").write_text("---\n".join([repo._pool(0), repo._advertisement(), repo._exposure(0)]))
    return root
