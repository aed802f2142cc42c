"""Cluster watches against the fake API server: what triggers a reconcile, and what does not."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reconciler.controller.watch import ClusterWatcher, node_essence, service_essence, watched_kinds
from tests.fakes.kube_api import FakeKube


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
def kube() -> Iterator[FakeKube]:
    with FakeKube(bookmark_interval=0.2) as fake:
        yield fake


@pytest.fixture
def watching(kube: FakeKube) -> Iterator[tuple[ClusterWatcher, Seen]]:
    kube.put_object(node("node-a"))
    seen = Seen()
    api = kube.api_client()
    watcher = ClusterWatcher(watched_kinds(api), seen, timeout_seconds=2).start()
    for event in watcher.synced.values():
        assert event.wait(5)
    yield watcher, seen
    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 3, "stopping does not wait for the watch timeout"
    api.close()


def test_new_loadbalancer_service_triggers_at_once(kube: FakeKube, watching: tuple[ClusterWatcher, Seen]) -> None:
    _, seen = watching
    assert seen.count() == 0, "the initial list is not a change"
    kube.put_object(service("internal", "ClusterIP"))
    kube.put_object(service("web"))
    took = wait_for(lambda: seen.count("Service default/web added") == 1)
    assert took < 0.5
    assert seen.count("internal") == 0


def test_only_essential_changes_trigger(kube: FakeKube, watching: tuple[ClusterWatcher, Seen]) -> None:
    _, seen = watching
    kube.put_object(node("node-a", heartbeat="2024-01-01T00:00:10Z"))  # a heartbeat
    kube.put_object(node("node-a", zone="b"))  # a label change: advertisement selectors may match now
    wait_for(lambda: seen.count("Node") == 1)
    kube.put_object({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                     "metadata": {"name": "web-1", "namespace": "default",
                                  "labels": {"kubernetes.io/service-name": "web"}},
                     "addressType": "IPv4",
                     "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "node-a",
                                    "conditions": {"ready": True}}]})
    wait_for(lambda: seen.count("EndpointSlice default/web-1") == 1)
    kube.delete_object("Node", "node-a")
    wait_for(lambda: seen.count("Node /node-a deleted") == 1)
    assert seen.count("Node") == 2


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


def test_api_errors_are_retried(kube: FakeKube) -> None:
    kube.fail_next("GET", "/api/v1/services", 503, count=2)
    seen = Seen()
    api = kube.api_client()
    watcher = ClusterWatcher(watched_kinds(api)[:1], seen, timeout_seconds=2).start()
    try:
        assert watcher.synced["Service"].wait(5)
        kube.put_object(service("web"))
        wait_for(lambda: seen.count("web") == 1)
    finally:
        watcher.stop()
        api.close()
