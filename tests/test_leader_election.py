"""The Lease state machine of `mcop_operator.leader` with a clock of the test's: who may take the
Lease when, the epoch, the renew deadline. The same code against the real API server, with real
processes killed and frozen: tests/test_operator_ha.py."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mcop_operator.leader import LeaderElector, LeaseConfig


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class LeaseStore:
    """The API server's side of one Lease: create, read, replace with a resourceVersion check."""

    def __init__(self) -> None:
        self.lease: Any = None
        self.version = 0

    def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> Any:
        if self.lease is None:
            raise ApiException(status=404)
        return copy.deepcopy(self.lease)

    def create_namespaced_lease(self, namespace: str, body: Any, **_: Any) -> Any:
        if self.lease is not None:
            raise ApiException(status=409)
        self.version += 1
        body.metadata.resource_version = str(self.version)
        self.lease = copy.deepcopy(body)
        return copy.deepcopy(body)

    def replace_namespaced_lease(self, name: str, namespace: str, body: Any, **_: Any) -> Any:
        if body.metadata.resource_version != self.lease.metadata.resource_version:
            raise ApiException(status=409)
        self.version += 1
        body.metadata.resource_version = str(self.version)
        self.lease = copy.deepcopy(body)
        return copy.deepcopy(body)

    @property
    def holder(self) -> str:
        return str(self.lease.spec.holder_identity or "")


def elector(store: LeaseStore, clock: Clock, identity: str, lost: list[str]) -> LeaderElector:
    config = LeaseConfig(namespace="ns", identity=identity)
    return LeaderElector(config, store, on_lost=lost.append, clock=clock)


def test_one_leader_a_standby_takes_over_only_after_the_lease_and_with_a_new_epoch() -> None:
    store, clock, lost = LeaseStore(), Clock(), list[str]()
    a, b = elector(store, clock, "a", lost), elector(store, clock, "b", lost)
    assert a.try_acquire_or_renew() is None and a.is_leader() and a.epoch == 1
    assert b.try_acquire_or_renew() is not None and not b.is_leader()
    # a renews every 2 s: b never gets it.
    for _ in range(20):
        clock.now += 2
        assert a.try_acquire_or_renew() is None
        assert b.try_acquire_or_renew() is not None
    # a dies: b waits a full lease (15 s) after the last change it saw, then leads with epoch 2.
    clock.now += 14
    assert b.try_acquire_or_renew() is not None
    clock.now += 1.5
    assert b.try_acquire_or_renew() is None and b.is_leader() and b.epoch == 2
    assert store.holder == "b"


def test_a_leader_that_cannot_renew_stops_before_anyone_may_take_over() -> None:
    store, clock, lost = LeaseStore(), Clock(), list[str]()
    a, b = elector(store, clock, "a", lost), elector(store, clock, "b", lost)
    assert a.try_acquire_or_renew() is None
    assert b.try_acquire_or_renew() is not None  # b saw a's renewal now
    clock.now += 9.9
    a.check()
    assert not lost
    clock.now += 0.2  # the renew deadline (10 s) passed: a stops, 5 s before b may take over
    a.check()
    assert lost == ["no renewal within the renew deadline"]
    assert b.try_acquire_or_renew() is not None  # b still waits


def test_a_released_lease_is_taken_at_once() -> None:
    store, clock, lost = LeaseStore(), Clock(), list[str]()
    a, b = elector(store, clock, "a", lost), elector(store, clock, "b", lost)
    assert a.try_acquire_or_renew() is None
    assert b.try_acquire_or_renew() is not None
    a.release()
    assert store.holder == ""
    assert b.try_acquire_or_renew() is None and b.epoch == 2


def test_a_standby_counts_the_lease_from_the_renewal_its_watch_saw() -> None:
    """Renewals seen through the watch when they are made: a dead holder's lease is counted from
    its last renewal, not from the standby's next poll (up to a retry period later)."""
    store, clock, lost = LeaseStore(), Clock(), list[str]()
    a, b = elector(store, clock, "a", lost), elector(store, clock, "b", lost)
    assert a.try_acquire_or_renew() is None
    assert b.try_acquire_or_renew() is not None
    clock.now += 1.9
    assert a.try_acquire_or_renew() is None  # a's last renewal, 0.1 s before b polls again
    b.observe(store.read_namespaced_lease("montecarlo-operator", "ns"))  # the watch's event
    clock.now += 0.1
    assert b.try_acquire_or_renew() is not None  # the poll sees nothing new
    clock.now += 14.85  # 14.95 s after a's last renewal: not yet
    wait = b.try_acquire_or_renew()
    assert wait is not None and wait <= 0.1, wait  # it waits exactly until the lease ends
    clock.now += wait
    assert b.try_acquire_or_renew() is None and b.epoch == 2


def test_a_release_seen_by_the_watch_wakes_the_standby() -> None:
    store, clock, lost = LeaseStore(), Clock(), list[str]()
    a, b = elector(store, clock, "a", lost), elector(store, clock, "b", lost)
    assert a.try_acquire_or_renew() is None
    b.observe(store.read_namespaced_lease("montecarlo-operator", "ns"))
    assert not b._released.is_set()
    a.release()
    b.observe(store.read_namespaced_lease("montecarlo-operator", "ns"))
    assert b._released.is_set()  # `acquire` stops waiting and tries now


def test_timings_must_nest() -> None:
    with pytest.raises(ValueError, match="retry < renew deadline < lease duration"):
        LeaseConfig(namespace="ns", lease_seconds=10, renew_deadline_seconds=10)


def test_the_lease_is_a_real_coordination_object() -> None:
    store, clock, lost = LeaseStore(), Clock(), list[str]()
    a = elector(store, clock, "a", lost)
    assert a.try_acquire_or_renew() is None
    assert isinstance(store.lease, client.V1Lease)
    assert store.lease.spec is not None and store.lease.spec.lease_duration_seconds == 15
