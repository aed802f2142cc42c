"""example-repo/: the whole mission as a real repo, valid, with MetalLB's manifests unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.desired.validate import load_desired_state

EXAMPLE = Path(__file__).resolve().parents[1] / "example-repo"

# The pool and advertisement as the original guide wrote them for MetalLB.
METALLB_GUIDE = """\
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: home-pool
  namespace: metallb-system
spec:
  addresses:
  - 192.168.1.100-192.168.2.200
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  name: home
  namespace: metallb-system
spec:
  ipAddressPools:
  - home-pool
"""


def test_portside_validate_example_repo_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out.strip().endswith("5 document(s) in 5 file(s), valid")


def test_metallb_manifests_are_exactly_the_guides() -> None:
    assert (EXAMPLE / "metallb" / "pool.yaml").read_text() == METALLB_GUIDE


def test_the_example_declares_the_whole_mission() -> None:
    state = load_desired_state(EXAMPLE, revision="example")
    [pool] = state.pools
    assert (pool.apiVersion, pool.metadata.name, pool.metadata.namespace) == (
        "metallb.io/v1beta1", "home-pool", "metallb-system")
    assert pool.spec.addresses == ["192.168.1.100-192.168.2.200"]
    [ad] = state.advertisements
    assert (ad.metadata.name, ad.spec.ipAddressPools) == ("home", ["home-pool"])
    [exposure] = state.exposures
    assert exposure.spec.service.key == "default/blog" and exposure.spec.pool == "home-pool"
    assert [p.port for p in exposure.spec.ports] == [80]
    [tunnel] = state.tunnels
    assert tunnel.spec.mode == "local" and tunnel.spec.dns.zones == ["example.dev"]
    assert tunnel.spec.tunnelId and tunnel.spec.credentialsFile
    [route] = state.routes
    assert route.spec.hostname == "blog.example.dev" and route.spec.tunnel == tunnel.metadata.name
    assert route.spec.service is not None
    assert (route.spec.service.key, route.spec.service.port) == ("default/blog", 80)
    assert route.spec.originRequest is not None
    assert route.spec.originRequest.httpHostHeader == "blog.example.dev"
    assert state.origins[("TunnelRoute", "blog")].file == "tunnel/routes.yaml"
