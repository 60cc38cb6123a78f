"""Leader election (tailor.leadership) against a fake Lease store and a fake clock: who may take
the Lease and when, renewals, losing it, releasing it, and run_when_leader's order of things."""

from __future__ import annotations

import copy
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from tailor.io.k8s import Conflict
from tailor.leadership import (
    ElectionConfig,
    Elector,
    acquire,
    micro_time,
    run_when_leader,
    watch_deadline,
)

from tests.support.testing import eventually


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.now)


class FakeLeases:
    """One Lease with the API server's optimistic concurrency: a write must carry the current
    resourceVersion, and each write makes a new one."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.fail: Exception | None = None  # raised by the next call (an unreachable server)
        self.gets = 0

    def get(self) -> dict[str, Any] | None:
        self.gets += 1
        self._maybe_fail()
        return copy.deepcopy(self.lease)

    def create(self, lease: dict[str, Any]) -> dict[str, Any]:
        self._maybe_fail()
        if self.lease is not None:
            raise Conflict("exists")
        return self._store(lease)

    def replace(self, lease: dict[str, Any]) -> dict[str, Any]:
        self._maybe_fail()
        assert self.lease is not None
        if lease["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise Conflict("stale")
        return self._store(lease)

    def _store(self, lease: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = copy.deepcopy(lease)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)

    def _maybe_fail(self) -> None:
        if self.fail is not None:
            raise self.fail

    @property
    def holder(self) -> str:
        return str((self.lease or {}).get("spec", {}).get("holderIdentity", ""))


def elector(store: FakeLeases, clock: FakeClock, identity: str) -> Elector:
    return Elector(store, ElectionConfig("tailor-operator", "tailor-system", identity),
                   monotonic=clock.monotonic, wall=clock.wall)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> FakeLeases:
    return FakeLeases()


def test_acquires_an_absent_lease_with_a_full_record(store: FakeLeases, clock: FakeClock) -> None:
    a = elector(store, clock, "a")
    assert a.try_acquire_or_renew() and a.leading
    assert store.lease is not None
    assert store.lease["metadata"] == {"name": "tailor-operator", "namespace": "tailor-system",
                                       "resourceVersion": "1"}
    stamp = micro_time(clock.wall())
    assert store.lease["spec"] == {"holderIdentity": "a", "leaseDurationSeconds": 15,
                                   "acquireTime": stamp, "renewTime": stamp,
                                   "leaseTransitions": 0}
    assert stamp.endswith("Z") and len(stamp.split(".")[1]) == 7  # microseconds, then Z


def test_does_not_take_a_lease_another_replica_renews(store: FakeLeases, clock: FakeClock
                                                      ) -> None:
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert a.try_acquire_or_renew()
    for _ in range(20):  # 40 s, the holder renewing every 2 s
        clock.now += 2
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew() and not b.leading
    assert store.holder == "a"


def test_takes_an_expired_lease_after_seeing_it_unchanged_for_its_duration(
        store: FakeLeases, clock: FakeClock) -> None:
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert a.try_acquire_or_renew()
    clock.now += 1
    assert not b.try_acquire_or_renew()  # b first sees the record here (t = 1)
    clock.now += 14.9  # a stopped renewing; 15 s after b saw it is t = 16
    assert not b.try_acquire_or_renew()
    clock.now += 0.2
    assert b.try_acquire_or_renew() and b.leading
    assert store.holder == "b" and store.lease is not None
    assert store.lease["spec"]["leaseTransitions"] == 1
    assert store.lease["spec"]["acquireTime"] == micro_time(clock.wall())


def test_expiry_is_judged_on_the_observers_clock_not_the_holders_renew_time(
        store: FakeLeases, clock: FakeClock) -> None:
    """A renewTime far in the past (a skewed holder clock) does not make a fresh lease free."""
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert a.try_acquire_or_renew()
    assert store.lease is not None
    store.lease["spec"]["renewTime"] = "2000-01-01T00:00:00.000000Z"
    assert not b.try_acquire_or_renew()


def test_renewal_keeps_the_acquire_time_and_moves_the_renew_time(store: FakeLeases,
                                                                 clock: FakeClock) -> None:
    a = elector(store, clock, "a")
    assert a.try_acquire_or_renew()
    assert store.lease is not None
    acquired = store.lease["spec"]["acquireTime"]
    clock.now += 2
    assert a.try_acquire_or_renew()
    assert store.lease["spec"]["acquireTime"] == acquired
    assert store.lease["spec"]["renewTime"] == micro_time(clock.wall())
    assert store.lease["spec"]["leaseTransitions"] == 0
    assert a.renewed_at == clock.now and not a.past_deadline()


def test_a_conflict_means_someone_else_won(store: FakeLeases, clock: FakeClock) -> None:
    """Two standbys read the same expired Lease; the second write carries a stale version."""
    a = elector(store, clock, "a")
    assert a.try_acquire_or_renew()
    b, c = elector(store, clock, "b"), elector(store, clock, "c")
    assert not b.try_acquire_or_renew() and not c.try_acquire_or_renew()
    clock.now += 16
    read_by_c = store.get()
    assert b.try_acquire_or_renew()
    assert read_by_c is not None
    with pytest.raises(Conflict):
        store.replace(read_by_c)
    real_get = store.get
    store.get = lambda: copy.deepcopy(read_by_c)  # type: ignore[method-assign]
    assert not c.try_acquire_or_renew() and not c.leading  # c's write is refused
    store.get = real_get  # type: ignore[method-assign]
    assert store.holder == "b"


def test_creating_a_lease_that_appeared_meanwhile_is_a_lost_race(store: FakeLeases,
                                                                clock: FakeClock) -> None:
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    store.get = lambda: None  # type: ignore[method-assign]  # both read "absent"
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew() and not b.leading
    assert store.holder == "a"


def test_a_leader_that_cannot_renew_passes_its_deadline(store: FakeLeases, clock: FakeClock
                                                        ) -> None:
    a = elector(store, clock, "a")
    assert a.try_acquire_or_renew()
    store.fail = ConnectionError("refused")
    for _ in range(5):
        clock.now += 2
        with pytest.raises(ConnectionError):
            a.try_acquire_or_renew()
        assert not a.past_deadline()  # 10 s since the last renewal: not yet past
    clock.now += 0.1
    assert a.past_deadline()
    # ... well before any standby may take over (15 s after it saw the last renewal).


def test_a_leader_that_sees_another_holder_has_lost_at_once(store: FakeLeases,
                                                           clock: FakeClock) -> None:
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert a.try_acquire_or_renew()
    assert store.lease is not None
    store.lease["spec"]["holderIdentity"] = "b"  # b took it (a was partitioned away)
    clock.now += 2
    assert not a.try_acquire_or_renew()
    assert a.past_deadline() and not a.leading
    assert not b.past_deadline()  # a standby has no deadline


def test_release_frees_the_lease_for_a_standby_at_once(store: FakeLeases, clock: FakeClock
                                                       ) -> None:
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert a.release() and not a.leading
    assert store.lease is not None
    assert (store.lease["spec"]["holderIdentity"], store.lease["spec"]["leaseDurationSeconds"]) \
        == ("", 1)
    assert not a.release()  # only once
    assert b.try_acquire_or_renew()  # no wait for the old duration
    assert store.lease["spec"]["leaseTransitions"] == 1


def test_release_never_overwrites_a_newer_holder(store: FakeLeases, clock: FakeClock) -> None:
    a = elector(store, clock, "a")
    assert a.try_acquire_or_renew()
    assert store.lease is not None
    store.lease["spec"]["holderIdentity"] = "b"
    store.lease["metadata"]["resourceVersion"] = "99"
    assert not a.release()
    assert store.holder == "b"


@pytest.mark.parametrize(("overrides", "complaint"), [
    ({"namespace": ""}, "POD_NAMESPACE"),
    ({"lease_name": ""}, "--leader-elect-resource-name"),
    ({"retry_period": 0}, "must be > 0"),
    ({"lease_duration": 10}, "lease duration (10) > renew deadline (10.0)"),
    ({"retry_period": 10.0}, "renew deadline (10.0) > retry period (10.0)"),
])
def test_bad_timings_and_missing_names_are_refused(overrides: dict[str, Any],
                                                   complaint: str) -> None:
    fields: dict[str, Any] = {"lease_name": "l", "namespace": "ns", "identity": "a", **overrides}
    with pytest.raises(ValueError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        ElectionConfig(**fields)


def test_acquire_retries_every_retry_period_until_the_lease_is_free(
        store: FakeLeases, clock: FakeClock) -> None:
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert a.try_acquire_or_renew()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.now += seconds
        if len(waits) == 3:
            store.fail = ConnectionError("the API server restarts")  # logged, retried
        if len(waits) == 4:
            store.fail = None

    acquire(b, sleep)
    assert b.leading and store.holder == "b"
    assert set(waits) == {2.0} and len(waits) == 8  # expired 15 s after b first saw it


def test_the_deadline_watch_calls_on_lost_once_past_it(store: FakeLeases, clock: FakeClock
                                                       ) -> None:
    a = elector(store, clock, "a")
    assert a.try_acquire_or_renew()
    clock.now += 10.5
    lost: list[bool] = []
    stop = threading.Event()
    watch_deadline(a, stop, lambda: lost.append(True), tick=0.001)  # returns after on_lost
    assert lost == [True]


@dataclass(frozen=True)
class Settings:
    leader_elect: bool = True
    leader_elect_resource_name: str = "tailor-operator"
    leader_elect_resource_namespace: str | None = "tailor-system"
    leader_elect_lease_duration: int = 3
    leader_elect_renew_deadline: float = 2.0
    leader_elect_retry_period: float = 0.05
    bind_address: str = "127.0.0.1"
    liveness_port: int = 0
    metrics_port: int = 0
    webhook_port: int = 0
    webhook_token_file: str | None = None


def test_without_leader_elect_the_operator_starts_at_once(store: FakeLeases) -> None:
    started: list[bool] = []
    run_when_leader(Settings(leader_elect=False), lambda: started.append(True), store=store)
    assert started == [True] and store.gets == 0


def test_the_operator_starts_only_as_leader_and_releases_the_lease_when_it_stops(
        store: FakeLeases, clock: FakeClock) -> None:
    other = elector(store, clock, "other")
    assert other.try_acquire_or_renew()
    holders: list[str] = []
    thread = threading.Thread(target=run_when_leader, args=(
        Settings(), lambda: holders.append(store.holder)), kwargs={"store": store})
    thread.start()
    # The standby keeps reading while the other replica holds the Lease, then it is released.
    eventually(lambda: store.gets >= 3, timeout=10, what="the standby to poll the Lease")
    assert holders == []
    assert other.release()
    thread.join(10)
    assert not thread.is_alive()
    assert len(holders) == 1 and holders[0] not in ("", "other")  # it held the Lease
    assert store.holder == ""  # released after start() returned


def test_a_standby_answers_its_probes_and_refuses_the_rest(store: FakeLeases,
                                                          clock: FakeClock) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    other = elector(store, clock, "other")
    assert other.try_acquire_or_renew()
    thread = threading.Thread(target=run_when_leader, args=(
        Settings(liveness_port=port), lambda: None), kwargs={"store": store}, daemon=True)
    thread.start()

    def answer(path: str, method: str = "GET") -> requests.Response | None:
        try:
            return requests.request(method, f"http://127.0.0.1:{port}{path}", timeout=2)
        except requests.ConnectionError:
            return None

    health = eventually(lambda: answer("/healthz"), timeout=10, what="the standby's /healthz")
    assert (health.status_code, health.text) == (200, "standby\n")
    metrics = answer("/metrics")
    assert metrics is not None and metrics.status_code == 200
    assert "python_info" in metrics.text or "process_" in metrics.text
    refused = answer("/alerts", "POST")
    assert refused is not None and refused.status_code == 503
    assert refused.headers["Retry-After"] == "2"
    assert other.release()
    thread.join(10)
    assert not thread.is_alive()
