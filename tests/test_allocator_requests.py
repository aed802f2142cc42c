"""service_requests: a Service's wishes, from the Service itself and its ServiceExposure."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.allocator import Allocation, ServiceRequest, allocate, service_requests
from reconciler.desired.models import IPAddressPool, ServiceExposure
from reconciler.planning.live import LiveService, ServicePort


def exposure(key: str, **spec: Any) -> ServiceExposure:
    namespace, name = key.split("/")
    return ServiceExposure.model_validate({
        "apiVersion": "portside.io/v1alpha1", "kind": "ServiceExposure",
        "metadata": {"name": f"expose-{name}", "namespace": namespace},
        "spec": {"service": {"namespace": namespace, "name": name}, **spec},
    })


def service(key: str, annotations: dict[str, str] | None = None, **fields: Any) -> LiveService:
    namespace, name = key.split("/")
    return LiveService(namespace=namespace, name=name, annotations=annotations or {}, **fields)


def one(services: list[LiveService], exposures: list[ServiceExposure]) -> ServiceRequest | Allocation:
    requests, rejected = service_requests(services, exposures)
    found: list[ServiceRequest | Allocation] = [*requests, *rejected]
    assert len(found) == 1
    return found[0]


def test_a_plain_service_becomes_a_request_with_all_its_fields() -> None:
    live = service("web/blog", labels={"app": "blog"}, ports=(ServicePort(443), ServicePort(53, "UDP")),
                   selector={"app": "blog"}, external_traffic_policy="Local",
                   ip_family_policy="PreferDualStack", ip_families=("IPv6", "IPv4"),
                   ingress=("10.0.0.1", "fd00::1"), annotations={"portside.io/pool": "home"})
    assert one([live], []) == ServiceRequest(
        key="web/blog", namespace="web", labels={"app": "blog"}, current=("10.0.0.1", "fd00::1"),
        requested=(),
        pool=None, sharing_key=None, ports=(ServicePort(443), ServicePort(53, "UDP")),
        external_traffic_policy="Local", selector={"app": "blog"}, ip_family_policy="PreferDualStack",
        ip_families=("IPv6", "IPv4"), current_pool="home")


@pytest.mark.parametrize(("annotations", "exposure_spec", "field", "expected"), [
    ({"metallb.io/address-pool": "a"}, {}, "pool", "a"),
    ({}, {"pool": "b"}, "pool", "b"),
    ({"metallb.io/address-pool": "b"}, {"pool": "b"}, "pool", "b"),
    ({"metallb.universe.tf/address-pool": "old"}, {}, "pool", "old"),  # MetalLB's deprecated prefix
    ({"metallb.io/address-pool": "new", "metallb.universe.tf/address-pool": "old"}, {}, "pool", "new"),
    ({"metallb.io/allow-shared-ip": "k"}, {}, "sharing_key", "k"),
    ({}, {"sharingKey": "k2"}, "sharing_key", "k2"),
    ({"metallb.io/allow-shared-ip": ""}, {}, "sharing_key", None),  # empty: no sharing, as in MetalLB
    ({"metallb.io/loadBalancerIPs": "10.0.0.1, fd00:0::1"}, {}, "requested", ("10.0.0.1", "fd00::1")),
    ({}, {"addresses": ["10.0.0.2"]}, "requested", ("10.0.0.2",)),
    ({"metallb.io/loadBalancerIPs": "fd00::1,10.0.0.1"}, {"addresses": ["10.0.0.1", "fd00:0:0::1"]},
     "requested", ("10.0.0.1", "fd00::1")),  # the same set, however written
    ({"metallb.universe.tf/loadBalancerIPs": "10.0.0.3"}, {}, "requested", ("10.0.0.3",)),
    ({"metallb.universe.tf/allow-shared-ip": "old-key"}, {}, "sharing_key", "old-key"),
])
def test_wishes_from_annotations_and_exposure(annotations: dict[str, str], exposure_spec: dict[str, Any],
                                             field: str, expected: object) -> None:
    exposures = [exposure("ns/a", **exposure_spec)] if exposure_spec else []
    got = one([service("ns/a", annotations)], exposures)
    assert isinstance(got, ServiceRequest)
    assert getattr(got, field) == expected


def test_spec_load_balancer_ip() -> None:
    got = one([service("ns/a", load_balancer_ip=" 10.0.0.9 ")], [])
    assert isinstance(got, ServiceRequest) and got.requested == ("10.0.0.9",)


@pytest.mark.parametrize(("annotations", "fields", "exposure_spec", "reason"), [
    ({"metallb.io/loadBalancerIPs": "10.0.0.1"}, {"load_balancer_ip": "10.0.0.1"}, {},
     "the Service sets both spec.loadBalancerIP and the metallb.io/loadBalancerIPs annotation; keep one"),
    ({"metallb.io/loadBalancerIPs": "10.0.0.1,"}, {}, {},
     "the metallb.io/loadBalancerIPs annotation: '' is not an IP address"),
    ({"metallb.io/loadBalancerIPs": "10.0.0.1, banana"}, {}, {},
     "the metallb.io/loadBalancerIPs annotation: 'banana' is not an IP address"),
    ({}, {"load_balancer_ip": "10.0.0.256"}, {}, "spec.loadBalancerIP: '10.0.0.256' is not an IP address"),
    ({}, {}, {"addresses": ["nope"]}, "ServiceExposure expose-a spec.addresses: 'nope' is not an IP address"),
    ({"metallb.io/address-pool": "a"}, {}, {"pool": "b"},
     "ServiceExposure expose-a sets pool 'b' but the Service's metallb.io/address-pool annotation says 'a'"),
    ({"metallb.io/allow-shared-ip": "x"}, {}, {"sharingKey": "y"},
     "ServiceExposure expose-a sets sharing key 'y' but the Service's metallb.io/allow-shared-ip annotation "
     "says 'x'"),
    ({}, {"load_balancer_ip": "10.0.0.1"}, {"addresses": ["10.0.0.2"]},
     "ServiceExposure expose-a requests 10.0.0.2 but spec.loadBalancerIP requests 10.0.0.1"),
])
def test_invalid_wishes_leave_the_service_pending(annotations: dict[str, str], fields: dict[str, Any],
                                                 exposure_spec: dict[str, Any], reason: str) -> None:
    exposures = [exposure("ns/a", **exposure_spec)] if exposure_spec else []
    got = one([service("ns/a", annotations, **fields)], exposures)
    assert isinstance(got, Allocation)
    assert got.ips == () and got.pending_reason is not None and reason in got.pending_reason


def test_invalid_wishes_of_a_holder_keep_its_ips() -> None:
    live = service("ns/a", {"metallb.io/address-pool": "a"}, ingress=("10.0.0.1",))
    requests, rejected = service_requests([live], [exposure("ns/a", pool="b")])
    assert rejected == []
    [request] = requests
    assert request.invalid is not None and "sets pool 'b'" in request.invalid
    pools = [IPAddressPool.model_validate({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                                           "metadata": {"name": "a"},
                                           "spec": {"addresses": ["10.0.0.0/30"]}})]
    [allocation] = allocate(pools, requests, {})
    assert allocation == Allocation("ns/a", ("10.0.0.1",), "a", warning=request.invalid)


def test_exposures_apply_only_to_their_own_service() -> None:
    requests, _ = service_requests([service("ns/a"), service("other/a")], [exposure("ns/a", pool="p")])
    assert {r.key: r.pool for r in requests} == {"ns/a": "p", "other/a": None}


def test_exposure_without_a_live_service_asks_for_nothing() -> None:
    assert service_requests([], [exposure("ns/a", pool="p")]) == ([], [])


def test_current_pool_from_metallb_annotation() -> None:
    got = one([service("ns/a", {"metallb.io/ip-allocated-from-pool": "legacy"}, ingress=("10.0.0.1",))], [])
    assert isinstance(got, ServiceRequest) and got.current_pool == "legacy"


def test_backend_key() -> None:
    cluster = ServiceRequest("ns/a", "ns", selector={"app": "x"})
    local = ServiceRequest("ns/a", "ns", selector={"b": "2", "a": "1"}, external_traffic_policy="Local")
    assert cluster.backend_key == ""
    assert local.backend_key == "a=1,b=2"
