"""Rank 0's Prometheus endpoint: the progress the operator copies into status.progress."""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Gauge, start_http_server
from tailor_contract import trainer_api

log = logging.getLogger(__name__)


class Progress:
    """Gauges named by the contract, on a registry of their own (no process-global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.step = Gauge(trainer_api.METRIC_STEP, "Optimizer steps done.", registry=self.registry)
        self.total = Gauge(trainer_api.METRIC_TOTAL_STEPS, "Optimizer steps planned.",
                           registry=self.registry)
        self.epoch = Gauge(trainer_api.METRIC_EPOCH, "Epochs done, fractional.",
                           registry=self.registry)
        self.loss = Gauge(trainer_api.METRIC_LOSS, "Training loss of the last step, averaged over "
                          "all processes.", registry=self.registry)
        self.samples = Gauge(trainer_api.METRIC_SAMPLES_PER_SECOND,
                             "Recent training throughput over all processes.",
                             registry=self.registry)
        self.eta = Gauge(trainer_api.METRIC_ETA_SECONDS, "Estimated seconds of training left.",
                         registry=self.registry)
        self.objective = Gauge(trainer_api.METRIC_VALIDATION_OBJECTIVE,
                               "Trial mode: the search's objective on the validation split "
                               "after each epoch.", [trainer_api.LABEL_EPOCH],
                               registry=self.registry)
        self._window_start = time.monotonic()
        self._window_steps = 0
        self._window_samples = 0
        self._rate = 0.0  # steps per second

    def serve(self, port: int) -> bool:
        """Start the endpoint; a busy port is logged, not fatal (training matters more)."""
        try:
            start_http_server(port, registry=self.registry)
        except OSError as exc:
            log.warning("cannot serve metrics on port %d: %s", port, exc)
            return False
        return True

    def update(self, step: int, total: int, epoch: float, loss: float, samples: int) -> None:
        """Record one optimizer step that processed `samples` examples over all processes."""
        self._window_steps += 1
        self._window_samples += samples
        now = time.monotonic()
        elapsed = now - self._window_start
        if elapsed >= 2.0 or self._rate == 0.0:
            if elapsed > 0:
                self._rate = self._window_steps / elapsed
                self.samples.set(self._window_samples / elapsed)
            self._window_start, self._window_steps, self._window_samples = now, 0, 0
        self.step.set(step)
        self.total.set(total)
        self.epoch.set(epoch)
        self.loss.set(loss)
        if self._rate > 0:
            self.eta.set(max(0.0, (total - step) / self._rate))

    def objective_at(self, epoch: int, value: float) -> None:
        """The objective after validation `epoch` (1, 2, ...); earlier epochs' samples stay, so
        one scrape holds the whole curve (what a pruner compares trials by)."""
        self.objective.labels(**{trainer_api.LABEL_EPOCH: str(epoch)}).set(value)

    def restart_window(self) -> None:
        """Forget time spent outside training (evaluation, checkpoints) in the rate."""
        self._window_start = time.monotonic()
        self._window_steps = 0
        self._window_samples = 0
