"""The fault proxy (tests/fakes/fault_proxy.py) in front of the fake or a real cluster.

Each fault is seen through the official client, as the code under test would see it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client import ApiException

from tests.kube import Cluster

pytestmark = pytest.mark.kube

Watch: Any = watch.Watch


def test_requests_are_forwarded_and_logged(cluster: Cluster) -> None:
    with cluster.proxied_client() as api:
        core: Any = client.CoreV1Api(api)
        core.create_namespaced_config_map(cluster.namespace, {"metadata": {"name": "cm"}, "data": {"a": "1"}})
        assert core.read_namespaced_config_map("cm", cluster.namespace).data == {"a": "1"}
    logged = cluster.proxy.requests(path=f"/namespaces/{cluster.namespace}/configmaps")
    assert [(r.method, r.status) for r in logged] == [("POST", 201), ("GET", 200)]
    assert logged[0].body == {"metadata": {"name": "cm"}, "data": {"a": "1"}}
    assert [r.method for r in cluster.proxy.writes()] == ["POST"]


@pytest.mark.parametrize(("status", "reason"), [(429, "TooManyRequests"), (500, "InternalError"),
                                                (409, "Conflict")])
def test_status_faults_are_answered_without_forwarding(cluster: Cluster, status: int, reason: str) -> None:
    fault = cluster.proxy.fail_next("POST", "/configmaps$", status, retry_after=2 if status == 429 else None)
    with cluster.proxied_client() as api:
        core: Any = client.CoreV1Api(api)
        with pytest.raises(ApiException) as err:
            core.create_namespaced_config_map(cluster.namespace, {"metadata": {"name": "cm"}})
        body = json.loads(err.value.body)
        assert (err.value.status, body["kind"], body["reason"]) == (status, "Status", reason)
        if status == 429:
            assert err.value.headers["Retry-After"] == "2" and body["details"]["retryAfterSeconds"] == 2
        assert cluster.config_map("cm") is None, "the request never reached the server"
        core.create_namespaced_config_map(cluster.namespace, {"metadata": {"name": "cm"}})  # one fault only
    assert fault.hits == 1 and cluster.config_map("cm") is not None


def test_a_dropped_connection(cluster: Cluster) -> None:
    cluster.proxy.drop_next("GET", "/configmaps/cm$")
    config = cluster.proxy.client_configuration()
    config.retries = 0  # see the drop itself, not urllib3's retry of it
    with client.ApiClient(config) as api:
        core: Any = client.CoreV1Api(api)
        with pytest.raises(urllib3.exceptions.HTTPError):
            core.read_namespaced_config_map("cm", cluster.namespace)


def test_a_watch_that_ends_early(cluster: Cluster) -> None:
    for name in ("a", "b", "c"):
        cluster.core.create_namespaced_config_map(cluster.namespace, {"metadata": {"name": name}})
    cluster.proxy.end_watch_next("/configmaps$", after_events=2)
    with cluster.proxied_client() as api:
        core: Any = client.CoreV1Api(api)
        # The server would send three ADDED events and then wait 30 s: the stream ends after two.
        events = list(Watch().stream(core.list_namespaced_config_map, cluster.namespace, timeout_seconds=30,
                                     _request_timeout=20))
    assert [e["object"].metadata.name for e in events] == ["a", "b"]
