"""A running job's progress, read from the trainer's rank-0 Prometheus endpoint.

Why pull rather than have the trainer patch the TrainingJob: the trainer then needs no API
credentials or RBAC at all, a slow or dead trainer cannot flood the API server, and the same
endpoint feeds Prometheus. The operator reads it at most once per interval per running job.
"""

from __future__ import annotations

from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families
from tailor_contract import clock, trainer_api

TIMEOUT_SECONDS = 2.0


def parse(text: str, now: str | None = None) -> dict[str, Any] | None:
    """status.progress from a metrics page; None if it has none of the trainer's metrics."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = sample.value
    if trainer_api.METRIC_STEP not in values:
        return None
    step = int(values[trainer_api.METRIC_STEP])
    progress: dict[str, Any] = {"step": step}
    total = int(values.get(trainer_api.METRIC_TOTAL_STEPS, 0))
    if total > 0:
        progress["totalSteps"] = total
        progress["percent"] = round(min(100.0, 100.0 * step / total), 1)
        progress["summary"] = f"{progress['percent']:g}%"
    else:
        progress["summary"] = f"step {step}"
    if trainer_api.METRIC_EPOCH in values:
        progress["epoch"] = round(values[trainer_api.METRIC_EPOCH], 3)
    if values.get(trainer_api.METRIC_ETA_SECONDS, -1) >= 0:
        progress["etaSeconds"] = int(values[trainer_api.METRIC_ETA_SECONDS])
    if trainer_api.METRIC_SAMPLES_PER_SECOND in values:
        progress["samplesPerSecond"] = round(values[trainer_api.METRIC_SAMPLES_PER_SECOND], 2)
    progress["updateTime"] = now or clock.stamp()
    return progress


def parse_curve(text: str) -> list[dict[str, Any]]:
    """A trial's validation curve, [{epoch, value}] by epoch, from its metrics page."""
    points: dict[int, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == trainer_api.METRIC_VALIDATION_OBJECTIVE:
                try:
                    points[int(sample.labels[trainer_api.LABEL_EPOCH])] = float(sample.value)
                except (KeyError, ValueError):
                    continue
    return [{"epoch": epoch, "value": points[epoch]} for epoch in sorted(points)]


def fetch(pod_ip: str, port: int = trainer_api.METRICS_PORT) -> str | None:
    """The trainer's metrics page, or None when it cannot be read (yet)."""
    try:
        response = requests.get(f"http://{pod_ip}:{port}/metrics", timeout=TIMEOUT_SECONDS)
    except requests.RequestException:
        return None
    return response.text if response.status_code == 200 else None


def scrape(pod_ip: str, port: int = trainer_api.METRICS_PORT) -> dict[str, Any] | None:
    text = fetch(pod_ip, port)
    return None if text is None else parse(text)
