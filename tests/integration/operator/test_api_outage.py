"""The API server goes silent mid-run and comes back: the operator's requests time out and are
retried (tailor_api_retries_total), what failed for good is redone by the resync, and the job
still ends Succeeded with exactly one worker group.

The outage is real, on a PRIVATE stack (its own API server, etcd and node in a temporary
directory; its containerd imports the trainer image, about a minute): the shared stack's API
server is never stopped. SIGSTOP makes
the API server accept connections and answer nothing, which a client only notices through its
timeouts.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from tailor_devstack.stack import Stack

from tests.support.testing import OperatorProcess, StackHandle, eventually, install_crds, paused

NAMESPACE = "outage"
OUTAGE_SECONDS = 15.0
# One worker whose program outlives the start of the outage and ends during it.
TRAININGJOB = {
    "apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
    "metadata": {"name": "through-outage", "namespace": NAMESPACE},
    "spec": {"task": "custom", "workers": 1, "procsPerWorker": 1,
             "command": ["python", "-c", "import time; time.sleep(6); print('done')"],
             "runPolicy": {"backoffLimit": 1}},
}


@pytest.fixture(scope="module")
def private_stack() -> Iterator[StackHandle]:
    with tempfile.TemporaryDirectory(prefix="tailor-outage-") as tmp:
        stack = Stack(Path(tmp) / "stack")
        try:
            state = stack.up(images=("pause", "trainer"), progress=lambda _message: None)
            handle = StackHandle(stack, state)
            install_crds(handle)
            handle.kubectl("create", "namespace", NAMESPACE)
            eventually(lambda: handle.kubectl("get", "serviceaccount", "default", "-n",
                                              NAMESPACE, check=False).returncode == 0,
                       timeout=30, what="the default ServiceAccount")
            yield handle
        finally:
            stack.down(progress=lambda _message: None)


def get(stack: StackHandle, *args: str) -> dict[str, Any]:
    result = stack.kubectl("get", *args, "-n", NAMESPACE, "-o", "json", check=False,
                           timeout=30)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def is_true(stack: StackHandle, kind: str) -> bool:
    conditions = get(stack, "tj", "through-outage").get("status", {}).get("conditions", [])
    return any(c["type"] == kind and c["status"] == "True" for c in conditions)


def retries(operator: OperatorProcess) -> float:
    text = requests.get(operator.metrics_url, timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("tailor_api_retries_total{"))


def test_a_job_converges_after_the_api_server_was_silent(private_stack: StackHandle,
                                                         tmp_path: Path) -> None:
    stack = private_stack
    # Short timeouts and a short retry deadline, so the outage outlasts a request's retries
    # and the resync (every 5 s here) has to redo what failed.
    operator = OperatorProcess(stack, tmp_path / "operator.log", "--namespace", NAMESPACE,
                               "--resync-interval", "5", "--api-timeout", "3",
                               "--api-retry-deadline", "6")
    try:
        started = time.monotonic()
        stack.kubectl("apply", "-f", "-", input=json.dumps(TRAININGJOB))
        eventually(lambda: is_true(stack, "Running"), timeout=120,
                   what="the job to run before the outage")
        with paused(stack, "kube-apiserver"):
            # The outage's length (the fault itself, not a wait for anything to settle):
            # the worker's program ends meanwhile, unseen.
            time.sleep(OUTAGE_SECONDS)
        eventually(lambda: is_true(stack, "Succeeded"), timeout=120,
                   what="the job to succeed after the outage")
        elapsed = time.monotonic() - started
        status = get(stack, "tj", "through-outage")["status"]
        assert status["phase"] == "Succeeded" and not is_true(stack, "Failed")
        assert status["workers"]["restarts"] == 0
        jobs = get(stack, "jobs", "-l", "tailor.dev/trainingjob=through-outage,"
                                        "tailor.dev/component=workers")["items"]
        assert [j["metadata"]["name"] for j in jobs] == ["through-outage-worker"]
        # The operator did notice: its requests during the outage timed out and were retried.
        assert retries(operator) > 0
        print(f"apply -> Succeeded {elapsed:.1f}s with a {OUTAGE_SECONDS:.0f}s API outage; "
              f"{retries(operator):.0f} retries")
        assert operator.alive()
    finally:
        operator.stop()
