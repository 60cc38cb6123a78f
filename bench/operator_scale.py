"""Operator scale: N TrainingJobs applied at once, against a plain client's ceiling.

In one run on the local stack:
- ceiling: a plain client creates the same Services and Jobs (built by the operator's own
  builders) directly, from the same thread pool;
- Tailor: the same number of TrainingJobs are created and the operator makes the children.
Worker pods are unschedulable (a node selector no node has), so the benchmark measures the
control path, not training. Reports apply -> Job-seen latency (p50/p99), jobs/s, the
operator's peak RSS and its API requests per job until the pods exist.

    ~/.cache/tailor/venv/bin/python -m bench.operator_scale --jobs 1000   # from the repository root
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from kubernetes import client, config, watch
from tailor.builders.trainingjob import JobRef, build_service, build_worker_job
from tailor_contract.trainingjob import TrainingJobSpec

from tests.support.testing import OperatorProcess, acquire_stack, eventually

SPEC: dict[str, Any] = {
    "task": "custom", "workers": 1, "procsPerWorker": 1,
    "command": ["python", "-c", "print('never runs')"],
    "scheduling": {"nodeSelector": {"tailor.dev/bench": "no-such-node"}},
}
THREADS = 16


class JobWatcher:
    """Records when each worker Job is first seen, and when it first has an active pod."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.seen: dict[str, float] = {}
        self.active: dict[str, float] = {}
        self._stop = False
        self.batch = client.BatchV1Api(api)
        self.namespace = namespace
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            stream = watch.Watch()
            for event in stream.stream(self.batch.list_namespaced_job, self.namespace,
                                       timeout_seconds=30):
                job = event["object"]
                name = job.metadata.name.removesuffix("-worker")
                now = time.monotonic()
                self.seen.setdefault(name, now)
                if (job.status.active or 0) > 0:
                    self.active.setdefault(name, now)
                if self._stop:
                    stream.stop()

    def stop(self) -> None:
        self._stop = True


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def create_all(count: int, create_one: Any) -> dict[str, float]:
    started: dict[str, float] = {}

    def one(i: int) -> None:
        name = f"bench-{i:04d}"
        started[name] = time.monotonic()
        create_one(name)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, range(count)))
    return started


def report(label: str, started: dict[str, float], watcher: JobWatcher, count: int,
           timeout: float) -> dict[str, float]:
    eventually(lambda: len(watcher.seen) >= count, timeout=timeout,
               what=f"{label}: all {count} Jobs to exist", interval=0.5)
    latencies = [watcher.seen[name] - t for name, t in started.items()]
    span = max(watcher.seen.values()) - min(started.values())
    result = {"p50": statistics.median(latencies), "p99": percentile(latencies, 0.99),
              "jobs_per_s": count / span, "span": span}
    print(f"{label:>8}: {count} jobs in {span:6.1f}s = {result['jobs_per_s']:6.1f} jobs/s; "
          f"apply->Job latency p50 {result['p50']:.3f}s p99 {result['p99']:.3f}s")
    return result


def operator_requests(metrics_url: str) -> float:
    """All requests the operator has made (it serves only the benchmark's namespace)."""
    text = requests.get(metrics_url, timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("tailor_api_requests_total{"))


def peak_rss_mib(pid: int) -> float:
    match = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--idle-jobs", type=int, default=20,
                        help="TrainingJobs applied one at a time before the burst")
    args = parser.parse_args()
    stack, _ = acquire_stack()
    stack.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                  str(Path(__file__).resolve().parents[1] / "crds"))
    api = config.new_client_from_config(str(stack.kubeconfig))
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    suffix = uuid.uuid4().hex[:4]
    ceiling_ns, tailor_ns = f"bench-ceiling-{suffix}", f"bench-tailor-{suffix}"
    for ns in (ceiling_ns, tailor_ns):
        core.create_namespace({"metadata": {"name": ns}})
    spec = TrainingJobSpec.model_validate(SPEC)
    print(f"{args.jobs} jobs, {THREADS} client threads, workers unschedulable")

    # Ceiling: the same children, created directly.
    watcher = JobWatcher(api, ceiling_ns)
    batch = client.BatchV1Api(api)

    def direct(name: str) -> None:
        ref = JobRef(name, ceiling_ns, str(uuid.uuid4()))
        service, job = build_service(ref), build_worker_job(spec, SPEC, ref, image="x",
                                                            attempt=0, deadline_seconds=None)
        for obj in (service, job):
            obj["metadata"].pop("ownerReferences")
        core.create_namespaced_service(ceiling_ns, service)
        batch.create_namespaced_job(ceiling_ns, job)

    ceiling = report("ceiling", create_all(args.jobs, direct), watcher, args.jobs, args.timeout)
    # Let the controller manager finish the ceiling's pods first, so the operator's phase does
    # not run against that background load.
    eventually(lambda: len(watcher.active) >= args.jobs, timeout=args.timeout,
               what="the ceiling's pods", interval=1)
    watcher.stop()

    # Tailor: TrainingJobs, with the operator making the children.
    operator = OperatorProcess(stack, stack.dir / "logs" / "operator-bench.log",
                               "--namespace", tailor_ns)
    try:
        watcher = JobWatcher(api, tailor_ns)

        def via_operator(name: str) -> None:
            custom.create_namespaced_custom_object(
                "tailor.dev", "v1alpha1", tailor_ns, "trainingjobs",
                {"apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
                 "metadata": {"name": name}, "spec": SPEC})

        # Idle stack: one TrainingJob at a time, each waited for (the operator's latency).
        idle: list[float] = []
        for i in range(args.idle_jobs):
            name = f"idle-{i:02d}"
            started = time.monotonic()
            via_operator(name)
            eventually(lambda name=name: name in watcher.seen, timeout=60,
                       what=f"{name}'s Job", interval=0.01)
            idle.append(watcher.seen[name] - started)
        idle_p50 = statistics.median(idle) if idle else float("nan")
        print(f"    idle: {args.idle_jobs} jobs one at a time; apply->Job latency "
              f"p50 {idle_p50:.3f}s max {max(idle, default=float('nan')):.3f}s")
        baseline_requests = operator_requests(operator.metrics_url)

        tailor = report("tailor", create_all(args.jobs, via_operator), watcher, args.jobs,
                        args.timeout)
        # Until the pods exist: every Job has an active (pending) pod and the operator has
        # recorded it in status.
        eventually(lambda: len(watcher.active) >= args.jobs + args.idle_jobs,
                   timeout=args.timeout, what="every Job to have its pod", interval=1)

        def recorded() -> bool:
            items = custom.list_namespaced_custom_object("tailor.dev", "v1alpha1", tailor_ns,
                                                         "trainingjobs")["items"]
            return all(i.get("status", {}).get("workers", {}).get("active") == 1
                       for i in items)

        eventually(recorded, timeout=args.timeout, what="status to show the pods", interval=2)
        requests_per_job = (operator_requests(operator.metrics_url)
                            - baseline_requests) / args.jobs
        rss = peak_rss_mib(operator.process.pid)
        watcher.stop()
    finally:
        operator.stop()
    ratio = tailor["jobs_per_s"] / ceiling["jobs_per_s"]
    print(f"throughput ratio tailor/ceiling = {ratio:.2f} (target >= 0.33)")
    print(f"apply->children on an idle stack p50 {idle_p50:.3f}s (target <= 1 s); "
          f"in the burst p50 {tailor['p50']:.3f}s, p99 {tailor['p99']:.3f}s")
    print(f"operator peak RSS {rss:.0f} MiB (target <= 300 MB)")
    print(f"operator API requests per job until its pods exist: {requests_per_job:.2f} "
          f"(target <= 8)")
    print(json.dumps({"ceiling": ceiling, "tailor": tailor, "idle_p50": idle_p50,
                      "idle": idle, "ratio": ratio, "rss_mib": rss,
                      "requests_per_job": requests_per_job}))
    for ns in (ceiling_ns, tailor_ns):
        core.delete_namespace(ns)


if __name__ == "__main__":
    main()
