"""Table sources: a watched file, and the ConfigMap through the official client.

The ConfigMap tests run against the fake or the cluster PORTSIDE_TEST_KUBECONFIG names (tests/kube.py).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.common.errors import UsageError
from reconciler.planning.announcement_table import (
    DEFAULT_HEARTBEAT,
    Announcement,
    AnnouncementTable,
    NodeInfo,
    encode_table,
    rank_candidates,
    table_to_configmap_data,
)
from reconciler.speaker.sources import ConfigMapSource, FileSource, TableSource
from tests.kube import Cluster

Event = tuple[str, object]


def table(generation: int, count: int = 1) -> AnnouncementTable:
    nodes = {"node-a": NodeInfo("10.0.0.1"), "node-b": NodeInfo("10.0.0.2")}
    return AnnouncementTable(generation, f"rev{generation}", DEFAULT_HEARTBEAT, nodes, tuple(
        Announcement(f"10.1.{i // 250}.{i % 250 + 1}", f"ns/svc-{i}", (),
                     rank_candidates(nodes, f"10.1.{i // 250}.{i % 250 + 1}"))
        for i in range(count)))


class Running:
    """A source running in its thread; what it delivers and reports lands in ``events``."""

    def __init__(self, source: TableSource) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=source.run, args=(
            lambda t: self.events.put(("table", t)), lambda m: self.events.put(("error", m)), self.stop),
            daemon=True)
        self.thread.start()

    def next(self, timeout: float = 5) -> Event:
        return self.events.get(timeout=timeout)

    def next_table(self, timeout: float = 5) -> AnnouncementTable:
        kind, value = self.next(timeout)
        assert kind == "table", value
        assert isinstance(value, AnnouncementTable)
        return value

    def next_error(self, timeout: float = 5) -> str:
        kind, value = self.next(timeout)
        assert kind == "error", value
        return str(value)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


@pytest.fixture
def running() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for item in started:
        item.close()


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.rename(path)


def test_file_source_follows_the_file(tmp_path: Path, running: list[Running]) -> None:
    path = tmp_path / "announcements.json"
    source = Running(FileSource(path))
    running.append(source)
    assert "does not exist yet" in source.next_error()
    write_atomically(path, encode_table(table(1)))
    assert source.next_table().generation == 1
    path.write_text(encode_table(table(2, count=3)))  # in place, not atomic: also seen
    assert source.next_table() == table(2, count=3)
    write_atomically(path, '{"generation": 3}')
    assert "missing field 'announcements'" in source.next_error()
    (tmp_path / "unrelated.log").write_text("noise")
    write_atomically(path, encode_table(table(4)))
    assert source.next_table().generation == 4
    assert source.events.empty()


def test_file_source_needs_an_existing_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"directory .*missing does not exist"):
        FileSource(tmp_path / "missing" / "announcements.json")


NAME = "portside-announcements"


def _configmap(data: dict[str, str], binary: dict[str, str]) -> dict[str, object]:
    body: dict[str, object] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": NAME}}
    if data:
        body["data"] = data
    if binary:
        body["binaryData"] = binary
    return body


def _publish(cluster: Cluster, data: dict[str, str], binary: dict[str, str]) -> None:
    """Create or replace the table's ConfigMap, as the reconciler does."""
    body = _configmap(data, binary)
    current = cluster.config_map(NAME)
    if current is None:
        cluster.core.create_namespaced_config_map(cluster.namespace, body)
    else:
        body["metadata"] = {"name": NAME, "resourceVersion": current["metadata"]["resourceVersion"]}
        cluster.core.replace_namespaced_config_map(NAME, cluster.namespace, body)


def _start(cluster: Cluster, running: list[Running]) -> Running:
    ConfigMapSource.RETRY_S = 0.1
    source = Running(ConfigMapSource(str(cluster.kubeconfig), cluster.namespace))
    running.append(source)
    # The first answer waits for the kubernetes package to import and the kubeconfig to load.
    assert f"ConfigMap {cluster.namespace}/{NAME} does not exist yet" in source.next_error(timeout=15)
    return source


@pytest.mark.kube
def test_configmap_source_lists_then_watches(cluster: Cluster, running: list[Running]) -> None:
    source = _start(cluster, running)
    _publish(cluster, *table_to_configmap_data(table(1)))
    assert source.next_table() == table(1)

    big = table(2, count=10_000)
    data, binary = table_to_configmap_data(big)
    assert binary, "10,000 IPs travel gzipped"
    _publish(cluster, data, binary)
    assert source.next_table(timeout=20) == big

    _publish(cluster, {"announcements.json": "{"}, {})
    assert "not valid JSON" in source.next_error()

    # The watch ends (a server's watch timeout): the source watches again and carries on.
    cluster.proxy.end_watch_next("/configmaps$")
    _publish(cluster, *table_to_configmap_data(table(3)))
    assert source.next_table(timeout=10) == table(3)

    cluster.core.delete_namespaced_config_map(NAME, cluster.namespace)
    assert "was deleted; keeping the last table" in source.next_error()
    watches = cluster.proxy.requests("GET", rf"/api/v1/namespaces/{cluster.namespace}/configmaps")
    assert any(r.query.get("watch") in ("true", "True", "1")
               and r.query.get("fieldSelector") == f"metadata.name={NAME}" for r in watches)


@pytest.mark.kube
@pytest.mark.fake
def test_configmap_source_lists_again_after_compaction(cluster: Cluster, running: list[Running]) -> None:
    assert cluster.fake is not None
    source = _start(cluster, running)
    _publish(cluster, *table_to_configmap_data(table(1)))
    assert source.next_table() == table(1)
    # History compacted while watching (410 Gone): the source lists again and carries on.
    cluster.fake.compact()
    _publish(cluster, *table_to_configmap_data(table(3)))
    assert source.next_table(timeout=10) == table(3)


def test_configmap_source_refuses_a_missing_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot load the kubeconfig"):
        ConfigMapSource(str(tmp_path / "nope")).check()
