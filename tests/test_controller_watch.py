"""Cluster watches: what triggers a reconcile, and what does not.

Against the fake or the cluster PORTSIDE_TEST_KUBECONFIG names (tests/kube.py); the watcher goes
through the fault proxy, which injects the errors and the early end of a watch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from reconciler.controller.watch import ClusterWatcher, node_essence, service_essence, watched_kinds
from tests.fakes.kube_api import FakeKube
from tests.kube import Cluster


def wait_for(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.005)
    raise AssertionError(f"{what} not met within {timeout}s")


def service(name: str, type_: str = "LoadBalancer", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": type_, "ports": [{"port": 80}], "selector": {"app": name}, **spec}}


def node(name: str, heartbeat: str = "2024-01-01T00:00:00Z", **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.10"}],
                       "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat}]}}


def test_essences() -> None:
    assert service_essence(service("web", "ClusterIP")) is None
    base = service_essence(service("web"))
    assert base is not None
    with_status = service("web")
    with_status["metadata"]["resourceVersion"] = "99"
    assert service_essence(with_status) == base, "bookkeeping fields are not essence"
    with_status["status"] = {"loadBalancer": {"ingress": [{"ip": "192.168.1.100"}]}}
    assert service_essence(with_status) != base, "a changed ingress is drift to repair"
    assert node_essence(node("a", "t1")) == node_essence(node("a", "t2")), "heartbeats are not changes"
    assert node_essence(node("a")) != node_essence(node("a", zone="x"))


class Seen:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changes: list[str] = []

    def __call__(self, what: str) -> None:
        with self.lock:
            self.changes.append(what)

    def count(self, fragment: str = "") -> int:
        with self.lock:
            return sum(fragment in c for c in self.changes)


@pytest.fixture
def watching(cluster: Cluster) -> Iterator[tuple[ClusterWatcher, Seen]]:
    cluster.add_node("node-a", "192.168.1.10")
    seen = Seen()
    api = cluster.proxied_client()
    watcher = ClusterWatcher(watched_kinds(api), seen, timeout_seconds=2).start()
    for event in watcher.synced.values():
        assert event.wait(5)
    yield watcher, seen
    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 3, "stopping does not wait for the watch timeout"
    api.close()


@pytest.mark.kube
def test_new_loadbalancer_service_triggers_at_once(cluster: Cluster, watching: tuple[ClusterWatcher, Seen]) -> None:
    _, seen = watching
    assert seen.count(cluster.namespace) == 0, "the initial list is not a change"
    cluster.add_service("internal", type="ClusterIP")
    cluster.add_service("web")
    took = wait_for(lambda: seen.count(f"Service {cluster.namespace}/web added") == 1)
    assert took < 0.5
    assert seen.count(f"{cluster.namespace}/internal") == 0


@pytest.mark.kube
def test_only_essential_changes_trigger(cluster: Cluster, watching: tuple[ClusterWatcher, Seen]) -> None:
    _, seen = watching
    node = cluster.node_name("node-a")
    cluster.set_node_status(node, "192.168.1.10", heartbeat=datetime(2030, 1, 1, tzinfo=UTC))  # a heartbeat
    cluster.core.patch_node(node, {"metadata": {"labels": {"zone": "b"}}})  # selectors may match now
    wait_for(lambda: seen.count(f"Node /{node}") == 1)
    cluster.add_endpoint_slice("web", [{"addresses": ["10.0.0.1"], "nodeName": node, "conditions": {"ready": True}}])
    wait_for(lambda: seen.count(f"EndpointSlice {cluster.namespace}/web-") == 1)
    cluster.core.delete_node(node)
    wait_for(lambda: seen.count(f"Node /{node} deleted") == 1)
    assert seen.count(f"Node /{node}") == 2


@pytest.mark.kube
def test_a_watch_that_ends_early_is_resumed(cluster: Cluster) -> None:
    # The proxy ends the next Service watch after one event, as a server does at its watch timeout;
    # the watcher resumes from the last resourceVersion it saw: nothing is missed, nothing repeated.
    cluster.proxy.end_watch_next("/services$", after_events=1)
    seen = Seen()
    api = cluster.proxied_client()
    watcher = ClusterWatcher(watched_kinds(api)[:1], seen, timeout_seconds=30).start()
    try:
        assert watcher.synced["Service"].wait(5)
        cluster.add_service("web")
        wait_for(lambda: seen.count(f"{cluster.namespace}/web") == 1)
        cluster.add_service("shop")
        wait_for(lambda: seen.count(f"{cluster.namespace}/shop") == 1, what="watching again after the end")
        watches = [r for r in cluster.proxy.requests("GET", "/services$") if r.query.get("watch")]
        assert len(watches) >= 2, "a second watch"
        assert seen.count(f"{cluster.namespace}/web") == 1
    finally:
        watcher.stop()
        api.close()


@pytest.mark.kube
@pytest.mark.fake
def test_expired_watch_lists_again() -> None:
    seen = Seen()
    with FakeKube(bookmark_interval=60) as kube:  # no bookmark moves the watch forward

        def service_lists() -> int:
            return sum("watch" not in r.query for r in kube.requests("GET", "^/api/v1/services$"))

        api = kube.api_client()
        watcher = ClusterWatcher(watched_kinds(api)[:1], seen, timeout_seconds=1).start()
        try:
            assert watcher.synced["Service"].wait(5)
            kube.put_object(service("web"))
            wait_for(lambda: seen.count("web") == 1)
            assert service_lists() == 1
            # Other objects move the resourceVersion on, then the history is compacted: the next
            # watch cannot resume from the last Service event (410 Gone) and lists again.
            kube.put_object({"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": "other", "namespace": "default"}})
            kube.compact()
            wait_for(lambda: service_lists() == 2, what="a relist after 410 Gone")
            kube.put_object(service("shop"))
            wait_for(lambda: seen.count("shop") == 1, what="watching again after the relist")
            assert seen.count("list changed") == 0, "the relist found nothing new"
        finally:
            watcher.stop()
            api.close()


@pytest.mark.kube
def test_api_errors_are_retried(cluster: Cluster) -> None:
    cluster.proxy.fail_next("GET", "/api/v1/services", 503, count=2)
    seen = Seen()
    api = cluster.proxied_client()
    watcher = ClusterWatcher(watched_kinds(api)[:1], seen, timeout_seconds=2).start()
    try:
        assert watcher.synced["Service"].wait(5)
        cluster.add_service("web")
        wait_for(lambda: seen.count(f"{cluster.namespace}/web") == 1)
        assert [r.status for r in cluster.proxy.requests("GET", "/api/v1/services$")][:3] == [503, 503, 200]
    finally:
        watcher.stop()
        api.close()
