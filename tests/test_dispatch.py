"""Which documents are portside's: a table of headers and what the loader does with each."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.desired.dispatch import Ours, Refused, Skipped, dispatch, near_group, split_api_version
from reconciler.desired.models import IPAddressPool, Tunnel

META = {"metadata": {"name": "x"}}

# (document, expected: "ours" | "skip:<reason>" | "error:<phrase>")
TABLE: list[tuple[Any, str]] = [
    # ours
    ({"apiVersion": "portside.io/v1alpha1", "kind": "Tunnel"}, "ours"),
    ({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool"}, "ours"),
    # someone else's group: skipped, even when the kind shares a name with ours
    ({"apiVersion": "apps/v1", "kind": "Deployment"}, "skip:otherKinds"),
    ({"apiVersion": "v1", "kind": "ServiceAccount"}, "skip:otherKinds"),
    ({"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}, "skip:otherKinds"),
    ({"apiVersion": "operator.inlets.dev/v1alpha1", "kind": "Tunnel"}, "skip:otherKinds"),
    ({"apiVersion": "networking.cfargotunnel.com/v1alpha1", "kind": "TunnelBinding"}, "skip:otherKinds"),
    ({"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool"}, "skip:otherKinds"),
    ({"apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost"}, "skip:otherKinds"),  # not "metallb.io"
    ({"apiVersion": "portworx.io/v1", "kind": "VolumePlacementStrategy"}, "skip:otherKinds"),
    ({"apiVersion": "v2", "name": "chart", "version": "0.1.0"}, "skip:otherKinds"),  # Chart.yaml
    ({"kind": "ServiceAccount"}, "skip:otherKinds"),  # not ours, without apiVersion
    # not a manifest at all
    ({"replicaCount": 2, "image": {"repository": "nginx"}}, "skip:notManifests"),
    ({"on": "push", "jobs": {}}, "skip:notManifests"),
    ({"resources": ["a.yaml"]}, "skip:notManifests"),
    (["a", "b"], "skip:notManifests"),
    ([{"name": "play", "hosts": "all"}], "skip:notManifests"),  # an Ansible playbook
    ("just a string", "skip:notManifests"),
    # MetalLB's kinds portside does not implement: skipped with a warning
    ({"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer"}, "skip:unsupportedKinds"),
    ({"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement"}, "skip:unsupportedKinds"),
    ({"apiVersion": "metallb.io/v1beta1", "kind": "BFDProfile"}, "skip:unsupportedKinds"),
    ({"apiVersion": "metallb.io/v1beta1", "kind": "Community"}, "skip:unsupportedKinds"),
    # near-misses and our headers with a mistake: errors
    ({"apiVersion": "portside.io/v1alpa1", "kind": "Tunnel"}, 'error:did you mean "portside.io/v1alpha1"?'),
    ({"apiVersion": "portsde.io/v1alpha1", "kind": "Tunnel"}, 'error:unknown API group "portsde.io"'),
    ({"apiVersion": "portside.com/v1alpha1", "kind": "Tunnel"}, 'error:did you mean "portside.io/v1alpha1"?'),
    ({"apiVersion": "metalb.io/v1beta1", "kind": "IPAddressPool"}, 'error:did you mean "metallb.io/v1beta1"?'),
    ({"apiVersion": "portside.oi/v1alpha1", "kind": "Tunnel"}, "error:unknown API group"),
    ({"apiVersion": "metallb.io/v1beta1", "kind": "IPAdressPool"}, 'error:did you mean "IPAddressPool"?'),
    ({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisment"}, 'error:did you mean "L2Advertisement"?'),
    ({"apiVersion": "portside.io/v1alpha1", "kind": "TunnelRoutes"}, 'error:did you mean "TunnelRoute"?'),
    ({"apiVersion": "portside.io/v1alpha1", "kind": "Gateway"}, 'error:unknown kind "Gateway"'),
    ({"apiVersion": "metallb.io/v1beta1", "kind": "Tunnel"}, "error:is not valid for kind Tunnel"),
    ({"apiVersion": "portside.io", "kind": "Tunnel"}, "error:is not valid for kind Tunnel"),
    ({"apiVersion": "v1", "kind": "IPAddressPool"}, "error:is not valid for kind IPAddressPool"),
    ({"apiVersion": "portside.io/v1alpha1"}, "error:missing kind"),
    ({"kind": "IPAddressPool"}, "error:missing apiVersion for kind IPAddressPool"),
    ({"kind": "ServiceExposur"}, 'error:did you mean "ServiceExposure"?'),
    ({"apiVersion": ["portside.io/v1alpha1"], "kind": "Tunnel"}, "error:apiVersion is not a string"),
    ({**META, "spec": {"mode": "local"}}, "error:missing apiVersion and kind"),
    ([{"apiVersion": "portside.io/v1alpha1", "kind": "Tunnel"}], "error:must be a mapping"),
]


def _outcome(verdict: Ours | Skipped | Refused) -> str:
    if isinstance(verdict, Ours):
        return "ours"
    if isinstance(verdict, Skipped):
        return f"skip:{verdict.reason}"
    return f"error:{verdict.message}"


@pytest.mark.parametrize(("document", "expected"), TABLE, ids=[str(i) for i in range(len(TABLE))])
def test_dispatch_table(document: Any, expected: str) -> None:
    got = _outcome(dispatch(document))
    if expected.startswith("error:"):
        assert got.startswith("error:") and expected.removeprefix("error:") in got, got
    else:
        assert got == expected


def test_ours_carries_the_model() -> None:
    assert dispatch({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool"}) == Ours(IPAddressPool)
    assert dispatch({"apiVersion": "portside.io/v1alpha1", "kind": "Tunnel"}) == Ours(Tunnel)


def test_a_typo_names_the_kind_it_meant() -> None:
    """So that documents naming it are not also told it is unknown."""
    verdict = dispatch({"apiVersion": "metallb.io/v1beta1", "kind": "IPAdressPool"})
    assert isinstance(verdict, Refused) and verdict.meant == "IPAddressPool"
    verdict = dispatch({"apiVersion": "portsde.io/v1alpha1", "kind": "Tunnel"})
    assert isinstance(verdict, Refused) and verdict.meant == "Tunnel"


def test_unsupported_metallb_kinds_say_so() -> None:
    verdict = dispatch({"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer"})
    assert isinstance(verdict, Skipped) and verdict.warning is not None
    assert "MetalLB kind BGPPeer is not supported by portside" in verdict.warning


@pytest.mark.parametrize(("api_version", "split"), [
    ("portside.io/v1alpha1", ("portside.io", "v1alpha1")), ("v1", ("", "v1")), ("apps/v1", ("apps", "v1")),
    ("portside.io", ("portside.io", "")),
])
def test_split_api_version(api_version: str, split: tuple[str, str]) -> None:
    assert split_api_version(api_version) == split


@pytest.mark.parametrize(("group", "near"), [
    ("portside.io", None), ("metallb.io", None), ("portsde.io", "portside.io"), ("portisde.io", "portside.io"),
    ("metallb.universe.tf", "metallb.io"), ("metal3.io", None), ("apps", None), ("", None),
    ("cilium.io", None), ("portworx.io", None),
])
def test_near_group(group: str, near: str | None) -> None:
    assert near_group(group) == near
