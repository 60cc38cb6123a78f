"""Start-up: settings, Kopf configuration, the metrics endpoint and the background loops
(housekeeping, starting workers, trial curves, drift checks, the periodic resync).

`python -m tailor` runs the operator; `--namespace` limits it (default: cluster-wide).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf
from prometheus_client import start_http_server
from tailor_contract.constants import FINALIZER, KOPF_ANNOTATION_PREFIX

from tailor import leadership, runtime
from tailor.controllers.driftmonitor import DriftMonitorController
from tailor.controllers.trainingjob import TrainingJobController, run_forever
from tailor.handlers import alerts as webhook
from tailor.handlers import driftmonitor as driftmonitor_handlers
from tailor.handlers import trainingjob as trainingjob_handlers
from tailor.io.k8s import POOL_SIZE, Kube, RetryPolicy
from tailor.settings import OperatorSettings, parse

log = logging.getLogger("tailor")
_stop = threading.Event()


class NoDiffBase(kopf.DiffBaseStorage):
    """Kopf keeps a "last handled" copy of each object only for change-detecting handlers
    (on.create, on.update, on.resume, daemons); Tailor has none, only event handlers and
    indexes, yet Kopf would still deep-copy every object on every event to build it. Nothing
    is stored, so nothing is written either. tests/unit/operator/test_controller.py keeps the
    registry free of handlers that would need one."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=KOPF_ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = NoDiffBase()
    # The controllers post their own Events, one per transition, not one per handler call.
    settings.posting.enabled = False
    settings.peering.standalone = True
    settings.execution.max_workers = POOL_SIZE
    settings.batching.batch_window = 0.05
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


@kopf.on.startup()
def start_background(trainingjob_index: kopf.Index[Any, Any],
                     driftmonitor_index: kopf.Index[Any, Any], **_: Any) -> None:
    rt = runtime.current()
    config = rt.settings
    start_http_server(config.metrics_port, addr=config.bind_address)

    def known(index: kopf.Index[Any, Any]) -> list[dict[str, Any]]:
        return [body for store in list(index.values()) for body in store]

    def monitor(namespace: str, name: str) -> dict[str, Any] | None:
        store = driftmonitor_index.get((namespace, name))
        return next(iter(store), None) if store else None

    loops = [("housekeeping", config.progress_interval,
              lambda: rt.trainingjobs.housekeeping(lambda: known(trainingjob_index))),
             # Starting workers get no event while a pod is stuck (tailor.assess.startup).
             ("startup-checks", config.progress_interval,
              lambda: rt.trainingjobs.check_starting(lambda: known(trainingjob_index))),
             ("trial-curves", config.trial_interval,
              lambda: rt.trainingjobs.scrape_trials(lambda: known(trainingjob_index))),
             ("drift-checks", 1.0, lambda: rt.driftmonitors.schedule(known(driftmonitor_index)))]
    for name, interval, step in loops:
        threading.Thread(target=run_forever, name=name, daemon=True,
                         args=(_stop, interval, step)).start()
    if config.resync_interval > 0:
        def resyncs() -> list[Callable[[], object]]:
            return [*(functools.partial(rt.trainingjobs.resync, body)
                      for body in known(trainingjob_index)),
                    *(functools.partial(rt.driftmonitors.resync, body)
                      for body in known(driftmonitor_index))]

        threading.Thread(target=resync_forever, name="resync", daemon=True,
                         args=(_stop, config.resync_interval, resyncs)).start()
    if config.webhook_token_file:
        tls = (Path(config.webhook_tls_cert_file), Path(config.webhook_tls_key_file)) \
            if config.webhook_tls_cert_file and config.webhook_tls_key_file else None
        webhook.start(config.bind_address, config.webhook_port, Path(config.webhook_token_file),
                      monitor, rt.driftmonitors.alert, tls)


def resync_forever(stop: threading.Event, interval: float,
                   steps: Callable[[], list[Callable[[], object]]],
                   clock: Callable[[], float] = time.monotonic) -> None:
    """Resync passes until `stop` is set. A pass takes the objects known at its start and
    re-assesses one every interval/n seconds, so it spreads over the interval (1,000 objects
    at 300 s: one each 0.3 s, never a thousand reconciles at once) and the next pass starts
    when the interval is over. A step that raises is logged; the pass goes on."""
    while not stop.is_set():
        pass_steps = steps()
        started = clock()
        if not pass_steps and stop.wait(interval):
            return
        spacing = interval / max(1, len(pass_steps))
        for number, step in enumerate(pass_steps, 1):
            if stop.wait(max(0.0, started + number * spacing - clock())):
                return
            try:
                step()
            except Exception:
                log.exception("resync step failed; the next pass retries it")


@kopf.on.cleanup()
def stop_background(**_: Any) -> None:
    _stop.set()


def main(argv: list[str] | None = None) -> None:
    config: OperatorSettings = parse(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("kopf").setLevel(logging.WARNING)  # not a line per handler call
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # not a line per probe
    # With --leader-elect a standby waits here, answering its probes, until it holds the Lease:
    # Kopf and the background loops (its startup handlers) start only in the leader.
    leadership.run_when_leader(config, lambda: run(config))


def run(config: OperatorSettings) -> None:
    """The operator itself: the controllers, Kopf's handlers and loops; blocks until it stops."""
    kube = Kube(retry=RetryPolicy(attempts=config.api_retries,
                                  deadline=config.api_retry_deadline,
                                  timeout=config.api_timeout))
    runtime.configure(runtime.Runtime(config, TrainingJobController(kube, config),
                                      DriftMonitorController(kube, config)))
    # Importing the handler modules registers them with Kopf.
    assert trainingjob_handlers.trainingjob_event and driftmonitor_handlers.driftmonitor_index
    exclusions = [f"!{pattern}" for pattern in config.exclude_namespaces]
    if config.namespaces or exclusions:
        # Each pattern is Kopf's "include, !exclude" glob list; exclusions apply to all.
        patterns = [", ".join([n, *exclusions]) for n in config.namespaces or ["*"]]
        scope: dict[str, Any] = {"namespaces": patterns}
    else:
        scope = {"clusterwide": True}
    kopf.run(
        **scope,
        standalone=True,
        # Kopf's default identity asks getpass, which fails for a uid with no passwd entry (the
        # image runs as 65532); the pod's name is what a reader of its logs wants anyway.
        identity=os.environ.get("POD_NAME") or socket.gethostname(),
        liveness_endpoint=f"http://{config.bind_address}:{config.liveness_port}/healthz",
    )
