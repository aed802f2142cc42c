"""The fake Kubernetes API server, driven only through the official `kubernetes` client over HTTP.

Tests taking the `target` fixture check server behaviour and also run against a real cluster when
PORTSIDE_TEST_KUBECONFIG names one (each in a namespace of its own, deleted afterwards), so the fake
can be checked against the real thing. Tests taking `kube` use the fake's own test surface
(request log, faults, compaction, direct state access): they are marked `fake`.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client import ApiException

from reconciler.controller.leader import micro_time
from tests.fakes.kube_api import FakeKube
from tests.kube import Cluster, wait_for

pytestmark = pytest.mark.kube

# The client's models type every field Optional and its watch/config modules are untyped; the tests
# handle its objects as Any rather than assert non-None before every attribute.
Watch: Any = watch.Watch
load_kube_config: Any = config.load_kube_config
# `target`: the fake, or the real cluster PORTSIDE_TEST_KUBECONFIG names, in a namespace of its own.
Target = Cluster


@pytest.fixture
def target(cluster: Cluster) -> Cluster:
    return cluster


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube(bookmark_interval=0.1) as fake:
        yield fake


@pytest.fixture
def api(kube: FakeKube) -> Iterator[client.ApiClient]:
    with client.ApiClient(kube.client_configuration()) as api_client:
        yield api_client


@pytest.fixture
def core(api: client.ApiClient) -> Any:
    return client.CoreV1Api(api)


def status_of(error: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error.body or "")
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == error.status
    return body


def service(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], **spec}}


# --- CRUD -------------------------------------------------------------------------------------


def test_service_create_sets_system_fields_defaults_and_drops_status(target: Target) -> None:
    body = service("web")
    body["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
    created = target.core.create_namespaced_service(target.namespace, body)
    meta = created.metadata
    assert meta.namespace == target.namespace and meta.uid and meta.creation_timestamp
    assert int(meta.resource_version) > 0
    assert created.spec.cluster_ip and created.spec.cluster_ips == [created.spec.cluster_ip]
    port = created.spec.ports[0]
    assert (port.protocol, port.target_port) == ("TCP", 80) and port.node_port
    assert created.spec.external_traffic_policy == "Cluster"
    assert created.status.load_balancer.ingress is None  # status is not settable on create


def test_service_read_replace_list_delete(target: Target) -> None:
    core, ns = target.core, target.namespace
    created = core.create_namespaced_service(ns, service("web"))
    read = core.read_namespaced_service("web", ns)
    assert read.metadata.uid == created.metadata.uid

    read.metadata.labels = {"tier": "front"}
    replaced = core.replace_namespaced_service("web", ns, read)
    assert replaced.metadata.labels == {"tier": "front"}
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    assert replaced.metadata.uid == created.metadata.uid
    assert replaced.spec.cluster_ip == created.spec.cluster_ip

    listed = core.list_namespaced_service(ns)
    assert [s.metadata.name for s in listed.items] == ["web"]
    assert int(listed.metadata.resource_version) >= int(replaced.metadata.resource_version)

    deleted = core.delete_namespaced_service("web", ns)  # services return the deleted object
    assert deleted.metadata.uid == created.metadata.uid
    with pytest.raises(ApiException) as err:
        core.read_namespaced_service("web", ns)
    assert err.value.status == 404


def test_configmap_crud_and_delete_returns_success_status(target: Target) -> None:
    core, ns = target.core, target.namespace
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    cm = core.read_namespaced_config_map("cm", ns)
    cm.data["b"] = "2"
    assert core.replace_namespaced_config_map("cm", ns, cm).data == {"a": "1", "b": "2"}
    status = core.delete_namespaced_config_map("cm", ns)
    assert status["status"] == "Success" and status["details"]["name"] == "cm"
    assert core.list_namespaced_config_map(ns).items == []


def test_lease_endpointslice_event_crud(target: Target) -> None:
    ns = target.namespace
    lease = target.leases.create_namespaced_lease(
        ns, {"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})
    assert lease.spec.holder_identity == "a"
    assert target.leases.read_namespaced_lease("leader", ns).metadata.uid == lease.metadata.uid
    assert target.leases.delete_namespaced_lease("leader", ns)["status"] == "Success"

    slice_body = {"metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
                  "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.5"], "nodeName": "n1",
                                                        "conditions": {"ready": True}}],
                  "ports": [{"port": 8080, "name": "http"}]}
    eps = target.discovery.create_namespaced_endpoint_slice(ns, slice_body)
    assert eps.metadata.generation == 1 and eps.ports[0].protocol == "TCP"
    eps.endpoints[0].conditions.ready = False
    updated = target.discovery.replace_namespaced_endpoint_slice("web-abc", ns, eps)
    assert updated.metadata.generation == 2
    found = target.discovery.list_namespaced_endpoint_slice(
        ns, label_selector="kubernetes.io/service-name=web")
    assert [e.metadata.name for e in found.items] == ["web-abc"]

    event = target.core.create_namespaced_event(ns, {
        "metadata": {"generateName": "web."}, "type": "Normal", "reason": "IPAllocated",
        "message": "assigned 192.0.2.10",
        "involvedObject": {"kind": "Service", "name": "web", "namespace": ns}})
    assert event.metadata.name.startswith("web.") and len(event.metadata.name) > len("web.")
    events = target.core.list_namespaced_event(
        ns, field_selector="involvedObject.name=web,reason=IPAllocated")
    assert [e.message for e in events.items] == ["assigned 192.0.2.10"]


def test_cluster_scoped_node_and_namespace(target: Target) -> None:
    core, name = target.core, target.node_name("node-a")
    node = core.create_node({"metadata": {"name": name, "labels": {"role": target.prefix}},
                             "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.10"}]}})
    try:
        assert node.metadata.namespace is None
        assert node.status.addresses[0].address == "192.168.1.10"  # node status is kept on create
        assert [n.metadata.name for n in core.list_node(label_selector=f"role={target.prefix}").items] == [name]
    finally:
        assert core.delete_node(name)["status"] == "Success"
    apps = target.make_namespace("apps")  # also deleted at the end if the test fails before
    ns = core.read_namespace(apps)
    assert ns.status.phase == "Active"
    assert ns.metadata.labels == {"kubernetes.io/metadata.name": apps}
    core.create_namespaced_config_map(apps, {"metadata": {"name": "x"}})
    deleted = core.delete_namespace(apps)  # the client types this as a plain object
    assert deleted["kind"] == "Namespace" and deleted["status"]["phase"] == "Terminating"

    def gone() -> bool:  # the namespace controller empties, then removes it: at once on the fake
        try:
            core.read_namespace(apps)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, f"namespace {apps} to be deleted", timeout=120)
    assert target.config_map("x", apps) is None  # the namespace's objects went with it


# --- errors -----------------------------------------------------------------------------------


def test_not_found_and_already_exists_are_status_bodies(target: Target) -> None:
    ns = target.namespace
    with pytest.raises(ApiException) as err:
        target.leases.read_namespaced_lease("missing", ns)
    body = status_of(err.value)
    assert (body["reason"], body["message"]) == ("NotFound", 'leases.coordination.k8s.io "missing" not found')
    assert body["details"] == {"name": "missing", "group": "coordination.k8s.io", "kind": "leases"}

    target.core.create_namespaced_service(ns, service("web"))
    with pytest.raises(ApiException) as err:
        target.core.create_namespaced_service(ns, service("web"))
    body = status_of(err.value)
    assert (err.value.status, body["reason"]) == (409, "AlreadyExists")
    assert body["message"] == 'services "web" already exists'


def test_create_in_missing_namespace_is_404(target: Target) -> None:
    with pytest.raises(ApiException) as err:
        target.core.create_namespaced_config_map(f"{target.namespace}-none", {"metadata": {"name": "x"}})
    assert status_of(err.value)["message"] == f'namespaces "{target.namespace}-none" not found'


def test_invalid_objects_are_422(target: Target) -> None:
    ns = target.namespace
    with pytest.raises(ApiException) as err:
        target.core.create_namespaced_config_map(ns, {"metadata": {}})
    body = status_of(err.value)
    assert (err.value.status, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"] == [{"reason": "FieldValueRequired", "field": "metadata.name",
                                          "message": "Required value: name or generateName is required"}]
    with pytest.raises(ApiException) as err:
        target.core.create_namespaced_service(ns, service("Bad_Name"))
    assert status_of(err.value)["details"]["causes"][0]["field"] == "metadata.name"

    target.core.create_namespaced_service(ns, service("web"))
    patch = {"status": {"loadBalancer": {"ingress": [{"ip": "not-an-ip"}]}}}
    with pytest.raises(ApiException) as err:
        target.core.patch_namespaced_service_status("web", ns, patch)
    body = status_of(err.value)
    assert body["details"]["causes"][0]["field"] == "status.loadBalancer.ingress[0].ip"
    assert body["message"].startswith(
        'Service "web" is invalid: status.loadBalancer.ingress[0].ip: Invalid value')


def test_stale_resource_version_on_replace_is_409_conflict(target: Target) -> None:
    ns = target.namespace
    target.core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    first = target.core.read_namespaced_config_map("cm", ns)
    second = target.core.read_namespaced_config_map("cm", ns)
    first.data = {"a": "first"}
    target.core.replace_namespaced_config_map("cm", ns, first)
    second.data = {"a": "second"}
    with pytest.raises(ApiException) as err:
        target.core.replace_namespaced_config_map("cm", ns, second)
    body = status_of(err.value)
    assert (err.value.status, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]
    assert target.core.read_namespaced_config_map("cm", ns).data == {"a": "first"}


def test_lease_conflict_for_leader_election(target: Target) -> None:
    ns, leases = target.namespace, target.leases
    spec = {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0}
    leases.create_namespaced_lease(ns, {"metadata": {"name": "portside"}, "spec": spec})
    seen_by_a = leases.read_namespaced_lease("portside", ns)
    seen_by_b = leases.read_namespaced_lease("portside", ns)
    seen_by_b.spec.holder_identity, seen_by_b.spec.lease_transitions = "b", 1
    leases.replace_namespaced_lease("portside", ns, seen_by_b)  # b takes over
    seen_by_a.spec.renew_time = micro_time()  # a MicroTime: exactly six fractional digits
    with pytest.raises(ApiException) as err:  # a renews from a stale read and must lose
        leases.replace_namespaced_lease("portside", ns, seen_by_a)
    assert status_of(err.value)["reason"] == "Conflict"
    assert leases.read_namespaced_lease("portside", ns).spec.holder_identity == "b"


def test_lease_replace_needs_resource_version_and_put_creates(target: Target) -> None:
    ns, leases = target.namespace, target.leases
    created = leases.replace_namespaced_lease("other", ns, {"metadata": {"name": "other"},
                                                            "spec": {"holderIdentity": "x"}})
    assert created.metadata.uid  # AllowCreateOnUpdate
    with pytest.raises(ApiException) as err:
        leases.replace_namespaced_lease("other", ns, {"metadata": {"name": "other"}, "spec": {}})
    body = status_of(err.value)
    assert (err.value.status, body["details"]["causes"][0]["field"]) == (422, "metadata.resourceVersion")
    assert body["message"] == ('Lease.coordination.k8s.io "other" is invalid: metadata.resourceVersion: '
                               "Invalid value: 0x0: must be specified for an update")
    assert {k: body["details"][k] for k in ("name", "group", "kind")} == {
        "name": "other", "group": "coordination.k8s.io", "kind": "Lease"}


def test_micro_time_needs_exactly_six_fractional_digits(target: Target) -> None:
    # Raw JSON: the official client (>= 35) parses MicroTime strings into datetimes and re-formats
    # them, so it could not send most of these values as written.
    ns = target.namespace
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"

    def lease(name: str, **spec: str) -> dict[str, Any]:
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name}, "spec": spec}

    status, body = target.raw("POST", leases, lease("l", renewTime="2026-12-01T05:35:22+00:00"))
    assert (status, body["reason"]) == (400, "BadRequest")
    assert body["message"] == ('Lease in version "v1" cannot be handled as a Lease: parsing time '
                               '"2026-12-01T05:35:22+00:00" as "2006-01-02T15:04:05.000000Z07:00": '
                               'cannot parse "+00:00" as ".000000"')
    status, body = target.raw("POST", leases, lease("l", acquireTime="2026-12-01T05:35:22.1234567Z"))
    assert status == 400 and body["message"].endswith('cannot parse "7Z" as "Z07:00"')  # nanoseconds
    status, created = target.raw("POST", leases, lease("l", renewTime="2026-12-01T05:35:22.000000+00:00",
                                                       acquireTime="2026-12-01T05:35:22.000001Z"))
    assert status == 201, created
    created["spec"]["renewTime"] = "2026-12-01T05:35:23Z"
    status, body = target.raw("PUT", f"{leases}/l", created)
    assert status == 400 and body["message"].endswith('cannot parse "Z" as ".000000"')
    status, body = target.raw("POST", f"/api/v1/namespaces/{ns}/events", {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
        "involvedObject": {"kind": "Service", "name": "web", "namespace": ns}, "reason": "Test",
        "eventTime": "2026-12-01T05:35:22Z", "reportingComponent": "portside", "reportingInstance": "test",
        "action": "Testing"})
    # Go's format is "%s in version %q cannot be handled as a %s": "a Event", as the server says it.
    assert status == 400 and body["message"].startswith('Event in version "v1" cannot be handled as a Event')


# --- status subresource and no-op writes -----------------------------------------------------


def test_status_subresource_semantics(target: Target) -> None:
    core, ns = target.core, target.namespace
    core.create_namespaced_service(ns, service("web"))
    with_status = core.patch_namespaced_service_status(
        "web", ns, {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}})
    assert with_status.status.load_balancer.ingress[0].ip == "192.0.2.10"

    svc = core.read_namespaced_service("web", ns)
    svc.status.load_balancer.ingress[0].ip = "192.0.2.99"
    svc.metadata.annotations = {"portside.io/pool": "home"}
    after_put = core.replace_namespaced_service("web", ns, svc)  # main resource: status ignored
    assert after_put.status.load_balancer.ingress[0].ip == "192.0.2.10"
    assert after_put.metadata.annotations == {"portside.io/pool": "home"}

    after_put.spec.session_affinity = "ClientIP"
    after_put.status.load_balancer.ingress[0].ip = "192.0.2.11"
    after_status = core.replace_namespaced_service_status("web", ns, after_put)  # spec is ignored
    assert after_status.status.load_balancer.ingress[0].ip == "192.0.2.11"
    assert after_status.spec.session_affinity == "None"
    patched = core.patch_namespaced_service_status("web", ns, {"spec": {"sessionAffinity": "ClientIP"}})
    assert patched.spec.session_affinity == "None"
    assert patched.metadata.resource_version == after_status.metadata.resource_version  # a no-op


def test_an_update_that_changes_nothing_keeps_the_resource_version(target: Target) -> None:
    core, ns = target.core, target.namespace
    core.create_namespaced_service(ns, service("web"))
    first = core.patch_namespaced_service_status(
        "web", ns, {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}})
    again = core.patch_namespaced_service_status(
        "web", ns, {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10", "ipMode": "VIP"}]}}})
    assert again.metadata.resource_version == first.metadata.resource_version


# --- patches ----------------------------------------------------------------------------------


def test_merge_patch(target: Target) -> None:
    core, ns = target.core, target.namespace
    core.create_namespaced_service(ns, {**service("web"), "metadata": {
        "name": "web", "annotations": {"keep": "1", "drop": "2"}}})
    patched = core.patch_namespaced_service(
        "web", ns, {"metadata": {"annotations": {"drop": None, "new": "3"}},
                    "spec": {"ports": [{"port": 443, "name": "https"}]}},
        _content_type="application/merge-patch+json")
    assert patched.metadata.annotations == {"keep": "1", "new": "3"}
    assert [p.port for p in patched.spec.ports] == [443]  # merge patch replaces lists


def test_strategic_merge_patch(target: Target) -> None:
    core, ns = target.core, target.namespace
    core.create_namespaced_service(ns, {**service("web"), "metadata": {"name": "web", "labels": {"a": "1"}},
                                        "spec": {"type": "LoadBalancer", "ports": [
                                            {"name": "http", "port": 80}, {"name": "dns", "port": 53}]}})
    patched = core.patch_namespaced_service("web", ns, {  # the client's default for a dict body
        "metadata": {"labels": {"b": "2"}},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 53, "$patch": "delete"},
                           {"name": "https", "port": 443}]}})
    assert patched.metadata.labels == {"a": "1", "b": "2"}
    ports = {p.port: p for p in patched.spec.ports}
    assert sorted(ports) == [80, 443]
    assert (ports[80].name, ports[80].target_port) == ("http", 8080)

    core.patch_namespaced_service_status("web", ns, {"status": {"loadBalancer": {"ingress": [
        {"ip": "192.0.2.1"}, {"ip": "192.0.2.2"}]}}})
    replaced = core.patch_namespaced_service_status("web", ns, {"status": {"loadBalancer": {"ingress": [
        {"ip": "192.0.2.3"}]}}})
    assert [i.ip for i in replaced.status.load_balancer.ingress] == ["192.0.2.3"]  # atomic list


def test_json_patch_and_failed_test_is_422(target: Target) -> None:
    core, ns = target.core, target.namespace
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}, "data": {"a": "1", "b": "2"}})
    patched = core.patch_namespaced_config_map("cm", ns, [
        {"op": "test", "path": "/data/a", "value": "1"},
        {"op": "replace", "path": "/data/a", "value": "10"},
        {"op": "remove", "path": "/data/b"},
        {"op": "add", "path": "/metadata/labels", "value": {}},
        {"op": "add", "path": "/metadata/labels/example.com~1team", "value": "net"}])
    assert patched.data == {"a": "10"}
    assert patched.metadata.labels == {"example.com/team": "net"}
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map("cm", ns, [{"op": "test", "path": "/data/a", "value": "1"},
                                                    {"op": "replace", "path": "/data/a", "value": "x"}])
    assert (err.value.status, status_of(err.value)["reason"]) == (422, "Invalid")
    assert core.read_namespaced_config_map("cm", ns).data == {"a": "10"}


def test_patch_with_stale_resource_version_is_409(target: Target) -> None:
    core, ns = target.core, target.namespace
    old = core.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
    core.patch_namespaced_config_map("cm", ns, {"data": {"a": "2"}})
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map(
            "cm", ns, {"metadata": {"resourceVersion": old.metadata.resource_version}, "data": {"a": "3"}},
            _content_type="application/merge-patch+json")
    assert status_of(err.value)["reason"] == "Conflict"
    current = core.read_namespaced_config_map("cm", ns)
    fresh = {"metadata": {"resourceVersion": current.metadata.resource_version}, "data": {"a": "4"}}
    assert core.patch_namespaced_config_map("cm", ns, fresh).data == {"a": "4"}


# --- lists ------------------------------------------------------------------------------------


def test_list_pagination_is_a_consistent_snapshot(target: Target) -> None:
    core, ns = target.core, target.namespace
    for i in range(5):
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"cm-{i}"}})
    first = core.list_namespaced_config_map(ns, limit=2)
    assert [c.metadata.name for c in first.items] == ["cm-0", "cm-1"]
    assert first.metadata.remaining_item_count == 3 and first.metadata._continue
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cm-9"}})  # after the snapshot
    core.delete_namespaced_config_map("cm-3", ns)
    names = []
    token = first.metadata._continue
    while token:
        page = core.list_namespaced_config_map(ns, limit=2, _continue=token)
        assert page.metadata.resource_version == first.metadata.resource_version
        names += [c.metadata.name for c in page.items]
        token = page.metadata._continue
    assert names == ["cm-2", "cm-3", "cm-4"]


@pytest.mark.fake
def test_continue_token_older_than_history_is_410(kube: FakeKube, core: Any) -> None:
    for i in range(3):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"cm-{i}"}})
    first = core.list_namespaced_config_map("default", limit=1)
    core.create_namespaced_config_map("default", {"metadata": {"name": "later"}})
    kube.compact()
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map("default", limit=1, _continue=first.metadata._continue)
    body = status_of(err.value)
    assert (err.value.status, body["reason"]) == (410, "Expired")
    assert body["message"].startswith("The provided continue parameter is too old")


def test_label_and_field_selectors(target: Target) -> None:
    core, ns = target.core, target.namespace
    for name, labels in [("a", {"app": "web", "tier": "front"}), ("b", {"app": "web"}), ("c", {"app": "db"}),
                         ("d", {})]:
        core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": labels}})

    def names(**kwargs: Any) -> list[str]:
        return [c.metadata.name for c in core.list_namespaced_config_map(ns, **kwargs).items]

    assert names(label_selector="app=web") == ["a", "b"]
    assert names(label_selector="app==web,tier") == ["a"]
    assert names(label_selector="app!=web") == ["c", "d"]
    assert names(label_selector="app in (db, web),!tier") == ["b", "c"]
    assert names(label_selector="app notin (web)") == ["c", "d"]
    assert names(field_selector="metadata.name=c") == ["c"]
    assert names(field_selector="metadata.name!=c", label_selector="app") == ["a", "b"]
    with pytest.raises(ApiException) as err:
        names(field_selector="data.x=1")
    assert (err.value.status, status_of(err.value)["reason"]) == (400, "BadRequest")


def test_list_across_all_namespaces(target: Target) -> None:
    core, apps = target.core, target.make_namespace("apps")
    core.create_namespaced_service(target.namespace, service("one"))
    core.create_namespaced_service(apps, service("two"))
    listed = core.list_service_for_all_namespaces()
    assert listed.kind == "ServiceList"
    found = [(s.metadata.namespace, s.metadata.name) for s in listed.items
             if s.metadata.namespace.startswith(target.namespace)]  # a real cluster has others
    # Ordered by etcd key, namespace/name: "pt-x-apps/two" sorts before "pt-x/one" ('-' < '/').
    assert found == [(apps, "two"), (target.namespace, "one")]


# --- watch ------------------------------------------------------------------------------------


def take(stream: Iterator[dict[str, Any]], count: int, types: set[str] | None = None) -> list[dict[str, Any]]:
    """The next `count` events of the given types (all types but BOOKMARK by default)."""
    types = types or {"ADDED", "MODIFIED", "DELETED", "ERROR"}
    events = []
    for event in stream:
        if event["type"] in types:
            events.append(event)
            if len(events) == count:
                return events
    raise AssertionError(f"the watch ended after {events}")


def test_watch_sends_current_objects_then_changes(target: Target) -> None:
    core, ns = target.core, target.namespace
    core.create_namespaced_service(ns, service("web"))
    w = Watch()
    stream = w.stream(core.list_namespaced_service, ns, timeout_seconds=10)
    [added] = take(stream, 1)
    assert (added["type"], added["object"].metadata.name) == ("ADDED", "web")
    ingress = {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}}}
    core.patch_namespaced_service_status("web", ns, ingress)
    [modified] = take(stream, 1)
    assert modified["type"] == "MODIFIED"
    assert modified["object"].status.load_balancer.ingress[0].ip == "192.0.2.7"
    core.delete_namespaced_service("web", ns)
    [deleted] = take(stream, 1)
    assert deleted["type"] == "DELETED"
    last_seen = int(modified["object"].metadata.resource_version)
    assert int(deleted["object"].metadata.resource_version) > last_seen
    w.stop()
    stream.close()


def test_watch_resumes_from_a_resource_version(target: Target) -> None:
    core, ns = target.core, target.namespace
    core.create_namespaced_service(ns, service("web"))
    listed = core.list_service_for_all_namespaces()
    core.create_namespaced_service(ns, service("api"))
    core.patch_namespaced_service("web", ns, {"metadata": {"labels": {"x": "1"}}})
    w = Watch()
    stream = w.stream(core.list_service_for_all_namespaces, resource_version=listed.metadata.resource_version,
                      timeout_seconds=10)
    events = take(stream, 2)
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "api"), ("MODIFIED", "web")]
    assert w.resource_version == events[-1]["object"].metadata.resource_version
    w.stop()
    stream.close()


def test_watch_selector_turns_leaving_objects_into_deleted(target: Target) -> None:
    core, ns = target.core, target.namespace
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cm", "labels": {"app": "web"}}})
    start = core.list_namespaced_config_map(ns).metadata.resource_version
    core.patch_namespaced_config_map("cm", ns, {"metadata": {"labels": {"app": None}}})
    core.patch_namespaced_config_map("cm", ns, {"metadata": {"labels": {"app": "web"}}})
    w = Watch()
    stream = w.stream(core.list_namespaced_config_map, ns, label_selector="app=web",
                      resource_version=start, timeout_seconds=10)
    assert [e["type"] for e in take(stream, 2)] == ["DELETED", "ADDED"]
    w.stop()
    stream.close()


@pytest.mark.fake
def test_watch_bookmarks_only_when_allowed(kube: FakeKube, core: Any) -> None:
    before = int(kube.resource_version)
    w = Watch()
    stream = w.stream(core.list_service_for_all_namespaces, allow_watch_bookmarks=True, timeout_seconds=10)
    core.create_namespaced_config_map("default", {"metadata": {"name": "other-kind"}})
    bookmarks = take(stream, 3, {"BOOKMARK"})  # periodic: every bookmark_interval (0.1 s here)
    assert {b["raw_object"]["kind"] for b in bookmarks} == {"Service"}
    assert int(bookmarks[-1]["raw_object"]["metadata"]["resourceVersion"]) > before  # newest revision
    assert w.resource_version == bookmarks[-1]["raw_object"]["metadata"]["resourceVersion"]
    stream.close()
    plain = list(Watch().stream(core.list_service_for_all_namespaces, timeout_seconds=1))
    assert [e["type"] for e in plain] == []


def test_send_initial_events_ends_with_annotated_bookmark(target: Target) -> None:
    core, ns = target.core, target.namespace
    core.create_namespaced_service(ns, service("web"))
    w = Watch()
    stream = w.stream(core.list_namespaced_service, ns, send_initial_events=True,
                      allow_watch_bookmarks=True, resource_version_match="NotOlderThan", timeout_seconds=10)
    added, bookmark = take(stream, 2, {"ADDED", "BOOKMARK"})
    assert added["type"] == "ADDED" and bookmark["type"] == "BOOKMARK"
    assert bookmark["raw_object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    stream.close()
    with pytest.raises(ApiException) as err:
        list(Watch().stream(core.list_namespaced_service, ns, send_initial_events=True, timeout_seconds=1))
    assert err.value.status == 422


@pytest.mark.fake
def test_watch_from_a_compacted_resource_version_is_410_gone(kube: FakeKube, core: Any) -> None:
    core.create_namespaced_service("default", service("web"))
    old = core.list_service_for_all_namespaces().metadata.resource_version
    core.patch_namespaced_service("web", "default", {"metadata": {"labels": {"x": "1"}}})
    kube.compact()
    # On the wire: HTTP 200, then one ERROR event carrying an Expired Status, as real servers send it.
    response = core.list_service_for_all_namespaces(watch=True, resource_version=old, timeout_seconds=5,
                                                    _preload_content=False)
    assert response.status == 200
    [line] = response.data.decode().splitlines()
    event = json.loads(line)
    assert event["type"] == "ERROR"
    assert {k: event["object"][k] for k in ("kind", "status", "reason", "code")} == {
        "kind": "Status", "status": "Failure", "reason": "Expired", "code": 410}
    # The client raises it (with timeout_seconds it does not retry, so a bug cannot hang the test).
    with pytest.raises(ApiException) as err:
        list(Watch().stream(core.list_service_for_all_namespaces, resource_version=old, timeout_seconds=5))
    assert err.value.status == 410 and "Expired: too old resource version" in err.value.reason


@pytest.mark.fake
def test_history_window_expires_old_resource_versions() -> None:
    with FakeKube(history=3) as small, client.ApiClient(small.client_configuration()) as api_client:
        small_core: Any = client.CoreV1Api(api_client)
        start = small_core.list_namespaced_config_map("default").metadata.resource_version
        for i in range(4):
            small_core.create_namespaced_config_map("default", {"metadata": {"name": f"cm-{i}"}})
        with pytest.raises(ApiException) as err:
            list(Watch().stream(small_core.list_namespaced_config_map, "default",
                                      resource_version=start, timeout_seconds=5))
        assert err.value.status == 410
        recent = str(int(small.resource_version) - 2)
        events = take(Watch().stream(small_core.list_namespaced_config_map, "default",
                                           resource_version=recent, timeout_seconds=5), 2)
        assert [e["object"].metadata.name for e in events] == ["cm-2", "cm-3"]


@pytest.mark.fake
def test_stop_ends_watches_and_leaves_no_threads() -> None:
    before = set(threading.enumerate())
    fake = FakeKube().start()
    api_client: Any = client.ApiClient(fake.client_configuration())
    core: Any = client.CoreV1Api(api_client)
    events: queue.Queue[str] = queue.Queue()

    def watcher() -> None:
        for event in Watch().stream(core.list_namespaced_config_map, "default", timeout_seconds=60):
            events.put(event["type"])
        events.put("END")

    thread = threading.Thread(target=watcher)
    thread.start()
    core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}})
    assert events.get(timeout=5) == "ADDED"
    started = time.monotonic()
    fake.stop()
    assert events.get(timeout=5) == "END"
    thread.join(timeout=5)
    assert time.monotonic() - started < 5
    api_client.close()
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert leaked == []


# --- the fake's own surface -------------------------------------------------------------------


@pytest.mark.fake
def test_request_log_records_writes(kube: FakeKube, core: Any) -> None:
    core.create_namespaced_service("default", service("web"))
    core.list_namespaced_service("default", label_selector="app=web")
    core.patch_namespaced_service_status("web", "default", {"status": {"loadBalancer": {}}})
    get = kube.requests("GET")[-1]
    assert (get.path, get.query, get.status) == (
        "/api/v1/namespaces/default/services", {"labelSelector": "app=web"}, 200)
    writes = kube.writes()
    assert [(w.method, w.path, w.status) for w in writes] == [
        ("POST", "/api/v1/namespaces/default/services", 201),
        ("PATCH", "/api/v1/namespaces/default/services/web/status", 200)]
    assert writes[1].content_type == "application/strategic-merge-patch+json"
    assert writes[1].body == {"status": {"loadBalancer": {}}}
    kube.clear_log()
    assert kube.requests() == []


@pytest.mark.fake
def test_fault_injection_then_recovery(kube: FakeKube, core: Any) -> None:
    fault = kube.fail_next("GET", r"/services$", 500, count=2)
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            core.list_namespaced_service("default")
        assert status_of(err.value)["reason"] == "InternalError"
    assert core.list_namespaced_service("default").items == []
    assert (fault.hits, fault.remaining) == (2, 0)

    kube.fail_next("*", r"/configmaps", 429, retry_after=3)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}})
    assert (err.value.headers or {})["Retry-After"] == "3"
    assert status_of(err.value)["details"] == {"retryAfterSeconds": 3}
    assert [r.status for r in kube.writes()] == [429]
    assert kube.get_object("ConfigMap", "cm") is None

    kube.fail_next("PUT", r"/leases/", 409, reason="Conflict")
    leases: Any = client.CoordinationV1Api(core.api_client)
    with pytest.raises(ApiException) as err:
        leases.replace_namespaced_lease("x", "default", {"metadata": {"name": "x"}, "spec": {}})
    assert status_of(err.value)["reason"] == "Conflict"


@pytest.mark.fake
def test_put_and_get_object_helpers_reach_the_api(kube: FakeKube, core: Any) -> None:
    seeded = kube.put_object({"apiVersion": "v1", "kind": "Service",
                              "metadata": {"name": "web", "namespace": "apps"},
                              "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
                              "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.5"}]}}})
    assert seeded["metadata"]["resourceVersion"] and kube.get_object("Namespace", "apps") is not None
    read = core.read_namespaced_service("web", "apps")
    assert read.status.load_balancer.ingress[0].ip == "192.0.2.5"  # put_object keeps status
    core.patch_namespaced_service("web", "apps", {"metadata": {"annotations": {"a": "b"}}})
    stored = kube.get_object("Service", "web", "apps")
    assert stored is not None and stored["metadata"]["annotations"] == {"a": "b"}
    with pytest.raises(ValueError, match=r"spec\.ports"):
        kube.put_object({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad"}, "spec": {}})
    assert kube.delete_object("Service", "web", "apps") and kube.get_object("Service", "web", "apps") is None


def test_dry_run_stores_nothing(target: Target) -> None:
    answer = target.core.create_namespaced_config_map(target.namespace, {"metadata": {"name": "cm"}},
                                                      dry_run="All")
    assert answer.metadata.name == "cm"
    assert target.config_map("cm") is None


@pytest.mark.fake
def test_kubeconfig_and_bearer_token(tmp_path: Path) -> None:
    with FakeKube(token="s3cret") as fake:
        path = fake.write_kubeconfig(tmp_path / "kubeconfig", namespace="default")
        configuration = client.Configuration()
        load_kube_config(config_file=str(path), client_configuration=configuration)
        with client.ApiClient(configuration) as api_client:
            namespaces: Any = client.CoreV1Api(api_client)
            assert namespaces.read_namespace("default").metadata.name == "default"
            assert client.VersionApi(api_client).get_code().git_version.startswith("v1.")
        anonymous = client.Configuration()
        anonymous.host = fake.url
        with client.ApiClient(anonymous) as api_client, pytest.raises(ApiException) as err:
            client.CoreV1Api(api_client).list_namespace()
        assert (err.value.status, status_of(err.value)["reason"]) == (401, "Unauthorized")
        assert "s3cret" not in repr(fake.requests())


def test_concurrent_writers_get_distinct_resource_versions(target: Target) -> None:
    core: Any = target.core
    versions: list[str] = []
    lock = threading.Lock()

    def write(i: int) -> None:
        cm = core.create_namespaced_config_map(target.namespace, {"metadata": {"name": f"cm-{i}"}})
        with lock:
            versions.append(cm.metadata.resource_version)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(set(versions)) == 8

