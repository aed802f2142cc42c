"""Leader election: the decision table, and two electors against a cluster's Leases.

The cluster is the fake, or the one PORTSIDE_TEST_KUBECONFIG names (tests/kube.py); the electors
reach it through the fault proxy, which also injects the failures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from kubernetes.client.exceptions import ApiException

from reconciler.controller.leader import LEASE_NAME, LeaderElector, LeaseRecord, decide, lease_body, micro_time
from tests.kube import Cluster


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError(f"{what} not met within {timeout}s")


def record(holder: str, duration: int = 15) -> LeaseRecord:
    return LeaseRecord(holder=holder, renew_time="t", duration=duration, transitions=0, resource_version="1")


@pytest.mark.parametrize(("lease", "observed_for", "action"), [
    (None, 0.0, "create"),
    (record("me"), 0.0, "renew"),
    (record("me"), 100.0, "renew"),
    (record(""), 0.0, "acquire"),
    (record("other"), 0.0, "follow"),
    (record("other"), 15.0, "follow"),
    (record("other"), 15.1, "acquire"),
    (record("other", duration=0), 1.5, "acquire"),
])
def test_decide(lease: LeaseRecord | None, observed_for: float, action: str) -> None:
    assert decide(lease, "me", observed_for=observed_for) == action


def elector(kube: Cluster, identity: str, changes: list[tuple[str, bool]] | None = None,
            lease_duration: float = 1.0) -> LeaderElector:
    def on_change(leading: bool) -> None:
        if changes is not None:
            changes.append((identity, leading))

    return LeaderElector(kube.proxied_client(), kube.namespace, identity, lease_duration=lease_duration,
                         retry_period=0.1, on_change=on_change)


def test_micro_time_always_carries_six_digits() -> None:
    assert micro_time(datetime(2026, 12, 1, 5, 35, 22, 123456, tzinfo=UTC)) == "2026-12-01T05:35:22.123456Z"
    # A whole second moves on by a microsecond: the client would send it without a fraction.
    assert micro_time(datetime(2026, 12, 1, 5, 35, 22, tzinfo=UTC)) == "2026-12-01T05:35:22.000001Z"


@pytest.mark.kube
def test_a_lease_written_at_a_whole_second_is_accepted(cluster: Cluster) -> None:
    # Through the official client as the elector sends it: before micro_time() avoided a zero
    # fraction, the client's isoformat() dropped it and the server answered 400.
    body = lease_body(None, "a", cluster.namespace, LEASE_NAME, duration=15, action="create")
    body["spec"]["renewTime"] = body["spec"]["acquireTime"] = micro_time(datetime(2026, 12, 1, 5, 35, 22,
                                                                                  tzinfo=UTC))
    cluster.leases.create_namespaced_lease(cluster.namespace, body)
    lease = cluster.lease(LEASE_NAME)
    assert lease is not None and lease["spec"]["renewTime"].startswith("2026-12-01T05:35:22.000001")


@pytest.mark.kube
def test_one_leader_and_a_graceful_handover(cluster: Cluster) -> None:
    kube = cluster
    changes: list[tuple[str, bool]] = []
    a = elector(kube, "a", changes).start()
    wait_for(a.is_leader, what="a leads")
    b = elector(kube, "b", changes).start()
    try:
        for _ in range(20):  # b keeps following while a renews
            assert b.attempt() is False
            assert a.is_leader() and not b.is_leader()
            time.sleep(0.05)
        lease = kube.lease(LEASE_NAME)
        assert lease is not None and lease["spec"]["holderIdentity"] == "a"
        a.stop()  # graceful: releases the lease
        assert not a.is_leader()
        took = wait_for(b.is_leader, what="b takes over")
        assert took < 0.5, "a released lease is taken at the next attempt"
        assert changes == [("a", True), ("a", False), ("b", True)]
    finally:
        b.stop()
        a.stop()


@pytest.mark.kube
def test_takeover_after_the_leader_dies(cluster: Cluster) -> None:
    kube = cluster
    a = elector(kube, "a").start()
    wait_for(a.is_leader, what="a leads")
    b = elector(kube, "b").start()
    try:
        a.stop(release=False)  # as if killed: the lease stays with a until it expires
        took = wait_for(b.is_leader, timeout=5, what="b takes over")
        assert 0.5 < took < 1.0 + 3 * 0.1 + 0.5, "within the lease duration (plus a few retry periods)"
        lease = kube.lease(LEASE_NAME)
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    finally:
        b.stop()


@pytest.mark.kube
def test_a_stale_write_loses_with_409(cluster: Cluster) -> None:
    kube = cluster
    a = elector(kube, "a")
    b = elector(kube, "b")
    assert a.attempt() is True
    stale = b._read()  # b reads, then a renews before b writes
    assert stale is not None
    assert a.attempt() is True
    body = lease_body(stale, "b", kube.namespace, LEASE_NAME, duration=1, action="acquire")
    with pytest.raises(ApiException) as caught:
        b.leases.replace_namespaced_lease(LEASE_NAME, kube.namespace, body)
    assert caught.value.status == 409
    lease = kube.lease(LEASE_NAME)
    assert lease is not None and lease["spec"]["holderIdentity"] == "a"


@pytest.mark.kube
def test_the_leader_steps_down_when_it_cannot_renew(cluster: Cluster) -> None:
    kube = cluster
    a = elector(kube, "a", lease_duration=1.5).start()
    try:
        wait_for(a.is_leader, what="a leads")
        kube.proxy.fail_next("*", "leases", 503, count=1000)
        took = wait_for(lambda: not a.is_leader(), what="a steps down")
        assert took <= 1.5 * 2 / 3 + 0.3, "before the lease could expire for the others"
    finally:
        a.stop(release=False)
