"""Leader election: the decision table, and two electors against the fake API server's Leases."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from kubernetes.client.exceptions import ApiException

from reconciler.controller.leader import LeaderElector, LeaseRecord, decide, lease_body
from tests.fakes.kube_api import FakeKube


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


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube(namespaces=("default", "portside-system")) as fake:
        yield fake


def elector(kube: FakeKube, identity: str, changes: list[tuple[str, bool]] | None = None,
            lease_duration: float = 1.0) -> LeaderElector:
    def on_change(leading: bool) -> None:
        if changes is not None:
            changes.append((identity, leading))

    return LeaderElector(kube.api_client(), "portside-system", identity, lease_duration=lease_duration,
                         retry_period=0.1, on_change=on_change)


def test_one_leader_and_a_graceful_handover(kube: FakeKube) -> None:
    changes: list[tuple[str, bool]] = []
    a = elector(kube, "a", changes).start()
    wait_for(a.is_leader, what="a leads")
    b = elector(kube, "b", changes).start()
    try:
        for _ in range(20):  # b keeps following while a renews
            assert b.attempt() is False
            assert a.is_leader() and not b.is_leader()
            time.sleep(0.05)
        lease = kube.get_object("Lease", "portside-reconciler", "portside-system")
        assert lease is not None and lease["spec"]["holderIdentity"] == "a"
        a.stop()  # graceful: releases the lease
        assert not a.is_leader()
        took = wait_for(b.is_leader, what="b takes over")
        assert took < 0.5, "a released lease is taken at the next attempt"
        assert changes == [("a", True), ("a", False), ("b", True)]
    finally:
        b.stop()
        a.stop()


def test_takeover_after_the_leader_dies(kube: FakeKube) -> None:
    a = elector(kube, "a").start()
    wait_for(a.is_leader, what="a leads")
    b = elector(kube, "b").start()
    try:
        a.stop(release=False)  # as if killed: the lease stays with a until it expires
        took = wait_for(b.is_leader, timeout=5, what="b takes over")
        assert 0.5 < took < 1.0 + 3 * 0.1 + 0.5, "within the lease duration (plus a few retry periods)"
        lease = kube.get_object("Lease", "portside-reconciler", "portside-system")
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    finally:
        b.stop()


def test_a_stale_write_loses_with_409(kube: FakeKube) -> None:
    a = elector(kube, "a")
    b = elector(kube, "b")
    assert a.attempt() is True
    stale = b._read()  # b reads, then a renews before b writes
    assert stale is not None
    assert a.attempt() is True
    body = lease_body(stale, "b", "portside-system", "portside-reconciler", duration=1, action="acquire")
    with pytest.raises(ApiException) as caught:
        b.leases.replace_namespaced_lease("portside-reconciler", "portside-system", body)
    assert caught.value.status == 409
    lease = kube.get_object("Lease", "portside-reconciler", "portside-system")
    assert lease is not None and lease["spec"]["holderIdentity"] == "a"


def test_the_leader_steps_down_when_it_cannot_renew(kube: FakeKube) -> None:
    a = elector(kube, "a", lease_duration=1.5).start()
    try:
        wait_for(a.is_leader, what="a leads")
        kube.fail_next("*", "leases", 503, count=1000)
        took = wait_for(lambda: not a.is_leader(), what="a steps down")
        assert took <= 1.5 * 2 / 3 + 0.3, "before the lease could expire for the others"
    finally:
        a.stop(release=False)
