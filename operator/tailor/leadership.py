"""Leader election through a coordination.k8s.io/v1 Lease, so that two or more operator replicas
have exactly one active: the mechanism client-go and controller-runtime use.

A replica that starts with `--leader-elect` blocks in `run_when_leader` until it holds the
Lease, answering its probes (and /metrics) meanwhile as a standby; only then does it start Kopf
and the background loops. The leader renews the Lease every retry period. If it has not renewed
within the renew deadline, it exits at once (`os._exit(EXIT_LOST_LEADERSHIP)`, no clean-up that
could still write) so two leaders never act together; Kubernetes restarts it as a standby. A
standby takes the Lease when it is free (no holder: released by a leader that shut down) or
expired; every write carries the resourceVersion that was read, so of two standbys racing for
it one gets a 409 and stays a standby.

Expiry is judged as client-go judges it: a Lease is expired when this replica has seen the same
record, unchanged, for leaseDurationSeconds of its own monotonic clock. The holder's renewTime
is never compared with the local wall clock, so clock skew between nodes cannot shorten a
lease. The cost: a standby that starts while a stale Lease is held waits one full lease
duration before it takes over. The leader exits after renew deadline (10 s) without a renewal,
measured from the start of its last successful request; a standby takes over no sooner than
lease duration (15 s) after it saw that renewal, which came later: the gap keeps the two apart.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from kubernetes.client.exceptions import ApiException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tailor.io.k8s import Conflict, Kube, RetryPolicy

log = logging.getLogger("tailor.leadership")
Obj = dict[str, Any]
# sysexits' EX_TEMPFAIL: a temporary condition, the restarted container is a standby.
EXIT_LOST_LEADERSHIP = 75


class ElectionSettings(Protocol):
    """What `run_when_leader` reads of the operator's settings (OperatorSettings has these)."""

    @property
    def leader_elect(self) -> bool: ...
    @property
    def leader_elect_resource_name(self) -> str: ...
    @property
    def leader_elect_resource_namespace(self) -> str | None: ...
    @property
    def leader_elect_lease_duration(self) -> int: ...
    @property
    def leader_elect_renew_deadline(self) -> float: ...
    @property
    def leader_elect_retry_period(self) -> float: ...
    @property
    def bind_address(self) -> str: ...
    @property
    def liveness_port(self) -> int: ...
    @property
    def metrics_port(self) -> int: ...
    @property
    def webhook_port(self) -> int: ...
    @property
    def webhook_token_file(self) -> str | None: ...


@dataclass(frozen=True)
class ElectionConfig:
    lease_name: str
    namespace: str
    identity: str
    lease_duration: int = 15  # seconds; the Lease's leaseDurationSeconds
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.namespace:
            raise ValueError("leader election needs the Lease's namespace: set POD_NAMESPACE "
                             "(the chart sets it from the downward API) or "
                             "--leader-elect-resource-namespace")
        if not self.lease_name:
            raise ValueError("leader election needs a Lease name (--leader-elect-resource-name)")
        if min(self.lease_duration, self.renew_deadline, self.retry_period) <= 0:
            raise ValueError("the lease duration, renew deadline and retry period must be > 0")
        if not self.lease_duration > self.renew_deadline > self.retry_period:
            raise ValueError(
                f"need lease duration ({self.lease_duration}) > renew deadline "
                f"({self.renew_deadline}) > retry period ({self.retry_period}): a leader must "
                "give up before its Lease expires, and retry before its deadline")

    @classmethod
    def from_settings(cls, settings: ElectionSettings, identity: str) -> ElectionConfig:
        return cls(settings.leader_elect_resource_name,
                   settings.leader_elect_resource_namespace or "", identity,
                   settings.leader_elect_lease_duration, settings.leader_elect_renew_deadline,
                   settings.leader_elect_retry_period)


def new_identity() -> str:
    """The pod's name (downward API POD_NAME) and a random suffix, as client-go does: a restarted
    container in the same pod is a new candidate, never mistaken for the old leader."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{secrets.token_hex(4)}"


def micro_time(moment: datetime) -> str:
    """A Lease's MicroTime: RFC 3339 with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseStore(Protocol):
    def get(self) -> Obj | None: ...
    def create(self, lease: Obj) -> Obj:
        """Raises Conflict when the Lease exists."""
    def replace(self, lease: Obj) -> Obj:
        """Raises Conflict when lease's resourceVersion is no longer the Lease's."""


class KubeLeases:
    """One Lease through the operator's Kubernetes client: get, create, update (PUT with the
    resourceVersion that was read), the three verbs the chart's Role grants."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube = kube
        self.collection = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.path = f"{self.collection}/{name}"

    def get(self) -> Obj | None:
        try:
            return self.kube._call("GET", self.path)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def create(self, lease: Obj) -> Obj:
        return self._conflicting("POST", self.collection, lease)

    def replace(self, lease: Obj) -> Obj:
        return self._conflicting("PUT", self.path, lease)

    def _conflicting(self, method: str, path: str, lease: Obj) -> Obj:
        try:
            return self.kube._call(method, path, lease)
        except ApiException as error:
            if error.status == 409:
                raise Conflict(lease["metadata"]["name"]) from error
            raise


class Elector:
    """The election's state and its one step, `try_acquire_or_renew` (client-go's
    tryAcquireOrRenew). Clocks are arguments so tests drive them."""

    def __init__(self, store: LeaseStore, config: ElectionConfig, *,
                 monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store, self.config = store, config
        self._monotonic, self._wall = monotonic, wall
        self._lock = threading.Lock()
        self._lease: Obj | None = None  # as last read or written
        self._observed: Obj | None = None  # the Lease's spec when it last changed ...
        self._observed_at = 0.0  # ... and when (monotonic) this replica saw it change
        self.renewed_at: float | None = None  # start of the last successful write, leading
        self.lost = False  # another holder seen while leading

    @property
    def leading(self) -> bool:
        return self.renewed_at is not None and not self.lost

    def past_deadline(self) -> bool:
        """While leading: no renewal for the renew deadline, or another holder seen."""
        if self.renewed_at is None:
            return False
        return self.lost or self._monotonic() - self.renewed_at > self.config.renew_deadline

    def holder(self) -> str:
        return str(((self._lease or {}).get("spec") or {}).get("holderIdentity") or "")

    def try_acquire_or_renew(self) -> bool:
        """One attempt: True when this replica holds the Lease afterwards."""
        with self._lock:
            started, stamp = self._monotonic(), micro_time(self._wall())
            me = self.config.identity
            lease = self.store.get()
            if lease is None:
                return self._write(self.store.create, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.config.lease_name,
                                 "namespace": self.config.namespace},
                    "spec": self._record(None, stamp)}, started)
            spec = lease.get("spec") or {}
            if spec != self._observed:
                self._observed, self._observed_at = spec, started
            self._lease = lease
            holder = spec.get("holderIdentity") or ""
            duration = spec.get("leaseDurationSeconds") or self.config.lease_duration
            if holder and holder != me and started < self._observed_at + duration:
                if self.renewed_at is not None:
                    self.lost = True  # someone else holds it: no use renewing
                return False
            return self._write(self.store.replace,
                               {**lease, "spec": self._record(spec, stamp)}, started)

    def _record(self, old: Obj | None, stamp: str) -> Obj:
        """This replica as holder; leaseTransitions counts changes of holder (client-go's)."""
        mine = old is not None and old.get("holderIdentity") == self.config.identity
        transitions = 0 if old is None else int(old.get("leaseTransitions") or 0) + (not mine)
        return {"holderIdentity": self.config.identity,
                "leaseDurationSeconds": self.config.lease_duration,
                "acquireTime": old.get("acquireTime", stamp) if old and mine else stamp,
                "renewTime": stamp, "leaseTransitions": transitions}

    def _write(self, write: Callable[[Obj], Obj], lease: Obj, started: float) -> bool:
        try:
            written = write(lease)
        except Conflict:
            return False  # someone else wrote first: they won this round
        self._lease, self._observed, self._observed_at = written, written.get("spec"), started
        self.renewed_at = started
        return True

    def release(self) -> bool:
        """Give the Lease up (no holder, 1 s duration) so a standby takes it at once; only the
        version this replica wrote is overwritten."""
        with self._lock:
            if not self.leading or self._lease is None:
                return False
            stamp = micro_time(self._wall())
            spec = {**self._lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1,
                    "acquireTime": stamp, "renewTime": stamp}
            try:
                self._lease = self.store.replace({**self._lease, "spec": spec})
            except Conflict:
                return False
            self.renewed_at = None
            return True


class _StandbyHandler(BaseHTTPRequestHandler):
    """A standby's answers: alive (/healthz, so probes pass and rollouts proceed as with
    controller-runtime's standbys), its process metrics (/metrics, so its scrape target is up),
    and 503 for anything else, e.g. an alert sent to the webhook's port: Alertmanager retries
    a 5xx and the Service soon sends it to the leader."""

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/healthz":
            self._answer(200, b"standby\n", "text/plain")
        elif path == "/metrics":
            self._answer(200, generate_latest(), CONTENT_TYPE_LATEST)
        else:
            self._answer(503, b"standby: not the leader\n", "text/plain")

    def do_POST(self) -> None:
        self._answer(503, b"standby: not the leader\n", "text/plain")

    def _answer(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if code == 503:
            self.send_header("Retry-After", "2")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None  # probes every few seconds: not a line each


class StandbyServer:
    """The operator's ports while it waits: closed before Kopf and the loops bind them."""

    def __init__(self, settings: ElectionSettings) -> None:
        ports = [settings.liveness_port, settings.metrics_port]
        if settings.webhook_token_file:
            ports.append(settings.webhook_port)
        self.servers = [ThreadingHTTPServer((settings.bind_address, port), _StandbyHandler)
                        for port in ports]
        for server in self.servers:
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, name="standby", daemon=True).start()

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


def _attempt(elector: Elector) -> bool:
    try:
        return elector.try_acquire_or_renew()
    except Exception as error:  # an unreachable API server: the next attempt may reach it
        log.warning("Lease %s: %s", elector.config.lease_name, error)
        return False


def acquire(elector: Elector, sleep: Callable[[float], None] = time.sleep) -> None:
    """Block until this replica holds the Lease, trying every retry period."""
    while not _attempt(elector):
        sleep(elector.config.retry_period)


def renew_forever(elector: Elector, stop: threading.Event) -> None:
    """The leader's renewals, every retry period until `stop`."""
    while not stop.wait(elector.config.retry_period):
        _attempt(elector)


def watch_deadline(elector: Elector, stop: threading.Event, on_lost: Callable[[], None],
                   tick: float = 0.25) -> None:
    """Separate from the renewals, so a request that hangs cannot keep a stale leader alive."""
    while not stop.wait(tick):
        if elector.past_deadline():
            on_lost()
            return


def exit_lost() -> None:
    log.critical("lost the leader Lease (no renewal within the renew deadline, or another "
                 "holder): exiting at once with code %d so a standby leads alone",
                 EXIT_LOST_LEADERSHIP)
    logging.shutdown()
    os._exit(EXIT_LOST_LEADERSHIP)


def run_when_leader(settings: ElectionSettings, start: Callable[[], None], *,
                    store: LeaseStore | None = None,
                    on_lost: Callable[[], None] = exit_lost) -> None:
    """`start()` (the operator: Kopf and its loops, blocking until it stops), right away
    without --leader-elect, else once this replica leads; the Lease is released after start
    returns (SIGTERM), so a standby takes over within a retry period."""
    if not settings.leader_elect:
        start()
        return
    config = ElectionConfig.from_settings(settings, new_identity())
    if store is None:
        # No retries inside a request: the election retries every retry period itself, and a
        # request that waits past half the renew deadline leaves time for another.
        kube = Kube(retry=RetryPolicy(attempts=1, timeout=config.renew_deadline / 2))
        store = KubeLeases(kube, config.namespace, config.lease_name)
    elector = Elector(store, config)
    standby = StandbyServer(settings)
    log.info("standby: waiting for Lease %s/%s as %s", config.namespace, config.lease_name,
             config.identity)
    try:
        acquire(elector)
    finally:
        standby.close()
    log.info("leading: holding Lease %s/%s as %s", config.namespace, config.lease_name,
             config.identity)
    stop = threading.Event()
    threads = [threading.Thread(target=renew_forever, args=(elector, stop), name="lease-renew",
                                daemon=True),
               threading.Thread(target=watch_deadline, args=(elector, stop, on_lost),
                                name="lease-deadline", daemon=True)]
    for thread in threads:
        thread.start()
    try:
        start()
    finally:
        stop.set()
        for thread in threads:
            thread.join(config.retry_period)
        if elector.release():
            log.info("released Lease %s/%s", config.namespace, config.lease_name)
