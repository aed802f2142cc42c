"""MetalLB's custom resources (metallb.io/v1beta1) through the official client's CustomObjectsApi.

The fake serves them from MetalLB's own CRDs (shared/metallb-crds beside the repository); against a
real cluster (PORTSIDE_TEST_KUBECONFIG) the same tests need those CRDs installed there. Without
them the tests skip and say so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, dynamic, watch
from kubernetes.client import ApiException

from tests.kube import Cluster

pytestmark = pytest.mark.kube

GROUP, VERSION = "metallb.io", "v1beta1"
Watch: Any = watch.Watch


@pytest.fixture
def metallb(cluster: Cluster) -> Cluster:
    cluster.require_metallb()
    return cluster


def pool(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "IPAddressPool", "metadata": {"name": name},
            "spec": {"addresses": ["192.0.2.10-192.0.2.20"], **spec}}


def status_of(error: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error.body or "")
    assert body["kind"] == "Status" and body["code"] == error.status
    return body


def test_pool_and_advertisement_crud(metallb: Cluster) -> None:
    custom, ns = metallb.custom, metallb.namespace
    created = custom.create_namespaced_custom_object(GROUP, VERSION, ns, "ipaddresspools", pool(
        "lan", unknownField=1, serviceAllocation={"priority": 5, "namespaces": ["web"]}))
    # Defaults from the schema, unknown fields pruned, generation 1.
    assert created["spec"]["autoAssign"] is True and created["spec"]["avoidBuggyIPs"] is False
    assert "unknownField" not in created["spec"]
    assert created["spec"]["serviceAllocation"] == {"priority": 5, "namespaces": ["web"]}
    assert created["metadata"]["generation"] == 1 and created["metadata"]["uid"]

    read = custom.get_namespaced_custom_object(GROUP, VERSION, ns, "ipaddresspools", "lan")
    assert read["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    read["spec"]["addresses"] = ["192.0.2.0/28"]
    replaced = custom.replace_namespaced_custom_object(GROUP, VERSION, ns, "ipaddresspools", "lan", read)
    assert replaced["spec"]["addresses"] == ["192.0.2.0/28"] and replaced["metadata"]["generation"] == 2

    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "l2advertisements", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "L2Advertisement", "metadata": {"name": "lan"},
        "spec": {"ipAddressPools": ["lan"], "interfaces": ["eth0"]}})
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, ns, "l2advertisements")
    assert listed["kind"] == "L2AdvertisementList" and listed["apiVersion"] == f"{GROUP}/{VERSION}"
    [item] = listed["items"]
    assert (item["kind"], item["spec"]["ipAddressPools"]) == ("L2Advertisement", ["lan"])  # unstructured
    every = custom.list_cluster_custom_object(GROUP, VERSION, "ipaddresspools", label_selector="")
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in every["items"]
            if p["metadata"]["namespace"] == ns] == [(ns, "lan")]

    deleted = custom.delete_namespaced_custom_object(GROUP, VERSION, ns, "ipaddresspools", "lan")
    assert deleted["status"] == "Success"
    with pytest.raises(ApiException) as err:
        custom.get_namespaced_custom_object(GROUP, VERSION, ns, "ipaddresspools", "lan")
    body = status_of(err.value)
    assert (err.value.status, body["message"]) == (404, 'ipaddresspools.metallb.io "lan" not found')


def test_schema_types_and_required_fields_are_422(metallb: Cluster) -> None:
    custom, ns = metallb.custom, metallb.namespace
    no_addresses = pool("bad")
    del no_addresses["spec"]["addresses"]
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "ipaddresspools", no_addresses)
    body = status_of(err.value)
    assert (err.value.status, body["reason"]) == (422, "Invalid")
    assert body["message"] == 'IPAddressPool.metallb.io "bad" is invalid: spec.addresses: Required value'
    assert body["details"]["causes"] == [{"reason": "FieldValueRequired", "message": "Required value",
                                          "field": "spec.addresses"}]
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "ipaddresspools", pool("bad", autoAssign="yes"))
    assert status_of(err.value)["message"] == (
        'IPAddressPool.metallb.io "bad" is invalid: spec.autoAssign: Invalid value: "string": '
        'spec.autoAssign in body must be of type boolean: "string"')
    without_spec = {k: v for k, v in pool("bad").items() if k != "spec"}
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "ipaddresspools", without_spec)
    assert status_of(err.value)["details"]["causes"][0]["field"] == "spec"


def test_updates_need_a_resource_version_and_status_is_a_subresource(metallb: Cluster) -> None:
    custom, ns = metallb.custom, metallb.namespace
    created = custom.create_namespaced_custom_object(GROUP, VERSION, ns, "ipaddresspools", {
        **pool("lan"), "status": {"assignedIPv4": 1, "assignedIPv6": 0, "availableIPv4": 10,
                                  "availableIPv6": 0}})
    assert "status" not in created, "create cannot set the status"
    unconditional = pool("lan")
    with pytest.raises(ApiException) as err:
        custom.replace_namespaced_custom_object(GROUP, VERSION, ns, "ipaddresspools", "lan", unconditional)
    assert status_of(err.value)["message"] == ('IPAddressPool.metallb.io "lan" is invalid: '
                                               "metadata.resourceVersion: Invalid value: 0x0: must be "
                                               "specified for an update")
    with pytest.raises(ApiException) as err:  # PUT never creates a custom resource
        custom.replace_namespaced_custom_object(GROUP, VERSION, ns, "ipaddresspools", "other", pool("other"))
    assert err.value.status == 404

    status = {"status": {"assignedIPv4": 2, "assignedIPv6": 0, "availableIPv4": 9, "availableIPv6": 0}}
    patched = custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, "ipaddresspools", "lan", status)
    assert patched["status"]["assignedIPv4"] == 2 and patched["metadata"]["generation"] == 1
    relabelled = custom.patch_namespaced_custom_object(GROUP, VERSION, ns, "ipaddresspools", "lan", {
        "metadata": {"labels": {"site": "home"}}, "status": {"assignedIPv4": 99}})
    assert relabelled["metadata"]["labels"] == {"site": "home"}
    assert relabelled["status"]["assignedIPv4"] == 2, "the main resource keeps the status"
    assert relabelled["metadata"]["generation"] == 1, "metadata is not spec"
    with pytest.raises(ApiException) as err:
        custom.patch_namespaced_custom_object(GROUP, VERSION, ns, "ipaddresspools", "lan",
                                              {"spec": {"autoAssign": False}},
                                              _content_type="application/strategic-merge-patch+json")
    assert err.value.status == 415


def test_watch_custom_objects(metallb: Cluster) -> None:
    custom, ns = metallb.custom, metallb.namespace
    start = custom.list_namespaced_custom_object(GROUP, VERSION, ns, "ipaddresspools")["metadata"]["resourceVersion"]
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "ipaddresspools", pool("lan"))
    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, "ipaddresspools", "lan",
                                          {"spec": {"autoAssign": False}})
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, "ipaddresspools", "lan")
    stream: Iterator[dict[str, Any]] = Watch().stream(
        custom.list_namespaced_custom_object, GROUP, VERSION, ns, "ipaddresspools", resource_version=start,
        timeout_seconds=10)
    seen = []
    for event in stream:
        seen.append((event["type"], event["object"]["kind"], event["object"]["spec"]["autoAssign"]))
        if len(seen) == 3:
            break
    assert seen == [("ADDED", "IPAddressPool", True), ("MODIFIED", "IPAddressPool", False),
                    ("DELETED", "IPAddressPool", False)]


def test_discovery_finds_the_metallb_kinds(metallb: Cluster, tmp_path: Path) -> None:
    groups = client.ApisApi(metallb.api).get_api_versions()
    metallb_group = next(g for g in groups.groups if g.name == GROUP)
    assert metallb_group.preferred_version.group_version == f"{GROUP}/{VERSION}"
    resources = client.CustomObjectsApi(metallb.api).get_api_resources(GROUP, VERSION)
    by_name = {r.name: r for r in resources.resources}
    assert by_name["ipaddresspools"].kind == "IPAddressPool" and by_name["ipaddresspools"].namespaced
    assert by_name["ipaddresspools"].singular_name == "ipaddresspool"
    assert set(by_name["l2advertisements"].verbs) >= {"create", "delete", "get", "list", "patch", "update",
                                                       "watch"}
    assert "ipaddresspools/status" in by_name
    # The dynamic client finds kinds through discovery alone, as generic tools (kubectl) do.
    dyn = dynamic.DynamicClient(metallb.api, cache_file=str(tmp_path / "discovery.json"))
    pools = dyn.resources.get(api_version=f"{GROUP}/{VERSION}", kind="IPAddressPool")
    pools.create(body=pool("found"), namespace=metallb.namespace)
    assert [p.metadata.name for p in pools.get(namespace=metallb.namespace).items] == ["found"]
