"""Operator scale: N TrainingJobs applied at once, against the fastest plain client's ceiling.

In one run on the local stack, each side as its own process, each run in its own namespace
(all deleted at the end; each run waits until the previous run's pods exist):
- ceiling (`bench/operator_ceiling.py`): creates the same Services and Jobs (built by the
  operator's own builders) as raw JSON through a warm connection pool, each job's Service and
  Job at once, many jobs at once. Every option in `--ceiling-options` (client and
  concurrency) is measured in round 1; later rounds repeat the best one;
- Tailor: the operator (`python -m tailor --namespace ...`, its own process) makes the
  children of as many TrainingJobs, applied by the ceiling's client with its best option
  (`--objects trainingjobs`, its own process). Round 1 first applies `--idle-jobs`
  TrainingJobs one at a time from the bench process (the idle-stack latency).
Rounds alternate which side goes first; each side's figure is its best round. Worker pods are
unschedulable (a node selector no node has), so the bench measures the control path, not
training. Reports jobs/s (first apply to last Job seen by a watch), apply -> Job latency, CPU
seconds per 1,000 jobs of the operator process and of the ceiling process (utime + stime from
/proc), API requests per job and peak RSS.

    ~/.cache/tailor/venv/bin/python -m bench.operator_scale --jobs 1000   # from the repository root
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

import requests
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from bench.operator_ceiling import SPEC, cpu_seconds, peak_rss_mib
from tests.support.testing import OperatorProcess, StackHandle, acquire_stack, eventually

REPO = Path(__file__).resolve().parents[1]


class JobWatcher:
    """Records when each worker Job is first seen, and when it first has an active pod. Reads
    the watch as raw JSON lines (no model conversion), so the bench process costs both sides
    as little CPU as it can."""

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
            response: Any = self.batch.list_namespaced_job(self.namespace, watch=True,
                                                      timeout_seconds=10,
                                                      _preload_content=False)
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                job = json.loads(line)["object"]
                now = time.monotonic()
                name = job["metadata"].get("name", "").removesuffix("-worker")
                self.seen.setdefault(name, now)
                if job.get("status", {}).get("active", 0) > 0:
                    self.active.setdefault(name, now)
                if self._stop:
                    break
            response.release_conn()

    def stop(self) -> None:
        self._stop = True


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(label: str, started: dict[str, float], watcher: JobWatcher, count: int,
              timeout: float) -> dict[str, Any]:
    eventually(lambda: len([n for n in started if n in watcher.seen]) >= count,
               timeout=timeout, what=f"{label}: all {count} Jobs to exist", interval=0.2)
    latencies = [watcher.seen[name] - t for name, t in started.items()]
    span = max(watcher.seen[name] for name in started) - min(started.values())
    return {"label": label, "p50": statistics.median(latencies),
            "p99": percentile(latencies, 0.99), "jobs_per_s": count / span, "span": span}


def line(result: dict[str, Any], stamp: bool = True) -> str:
    """One run's figures; `stamp` prefixes the time (for lines printed as the run ends)."""
    return (f"{time.strftime('%H:%M:%S ') if stamp else ''}{result['label']:>18}: "
            f"{result['jobs_per_s']:6.1f} jobs/s "
            f"({result['span']:5.1f}s); apply->Job p50 {result['p50']:.3f}s "
            f"p99 {result['p99']:.3f}s; CPU {result['cpu_per_1000']:5.1f}s/1000 jobs; "
            f"{result['requests_per_job']:.2f} requests/job; peak RSS "
            f"{result['rss_mib']:.0f} MiB")


def operator_requests(metrics_url: str) -> float:
    """All requests the operator has made (it serves only the benchmark's namespace)."""
    text = requests.get(metrics_url, timeout=10).text
    return sum(float(row.rsplit(" ", 1)[1]) for row in text.splitlines()
               if row.startswith("tailor_api_requests_total{"))


class Bench:
    def __init__(self, stack: StackHandle, args: argparse.Namespace) -> None:
        self.stack, self.args = stack, args
        self.api = config.new_client_from_config(  # type: ignore[no-untyped-call]
            str(stack.kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.prefix = f"bench-op-{uuid.uuid4().hex[:4]}"
        self.namespaces: list[str] = []

    def namespace(self, tag: str) -> str:
        name = f"{self.prefix}-{tag}"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        self.namespaces.append(name)
        return name

    def drop_all(self) -> None:
        """Delete every namespace of the run, and wait until they are gone. Only at the end:
        a namespace's deletion (the garbage collector deleting a thousand Jobs and pods) takes
        minutes on a loaded machine, and it must not run under a measured run."""
        for namespace in self.namespaces:
            with contextlib.suppress(ApiException):
                self.core.delete_namespace(namespace)

        def gone(namespace: str) -> bool:
            try:
                self.core.read_namespace(namespace)
            except ApiException as error:
                return bool(error.status == 404)
            return False

        try:
            eventually(lambda: all(gone(n) for n in self.namespaces), timeout=600,
                       what=f"namespaces {self.namespaces} to go", interval=5)
        except AssertionError as error:
            print(f"warning: {error}", flush=True)

    def wait_pods(self, watcher: JobWatcher, count: int, what: str) -> None:
        eventually(lambda: len(watcher.active) >= count, timeout=self.args.timeout,
                   what=what, interval=0.5)

    def client(self, option: str, namespace: str, objects: str) -> dict[str, Any]:
        """Run `bench/operator_ceiling.py` as its own process; its JSON answer."""
        kind, concurrency = option.split(":")
        env = {**os.environ, **self.stack.env, "KUBECONFIG": str(self.stack.kubeconfig)}
        done = subprocess.run(
            [sys.executable, "-m", "bench.operator_ceiling", "--kubeconfig",
             str(self.stack.kubeconfig), "--namespace", namespace, "--jobs",
             str(self.args.jobs), "--client", kind, "--concurrency", concurrency,
             "--objects", objects],
            capture_output=True, text=True, timeout=self.args.timeout, cwd=REPO, env=env,
            check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the client process failed: {done.stderr[-2000:]}")
        out: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        if out["error_count"]:
            raise RuntimeError(f"the client's creates failed: {out['errors']}")
        return out

    def ceiling(self, option: str, tag: str) -> dict[str, Any]:
        ns = self.namespace(tag)
        watcher = JobWatcher(self.api, ns)
        out = self.client(option, ns, "children")
        result = summarize(f"ceiling {option}", out["started"], watcher, self.args.jobs,
                           self.args.timeout)
        result.update(option=option, cpu_per_1000=out["cpu_s"] * 1000 / self.args.jobs,
                      requests_per_job=out["requests"] / self.args.jobs,
                      rss_mib=out["peak_rss_mib"])
        print(line(result), flush=True)
        # The Job controller finishes the pods before the next run starts.
        self.wait_pods(watcher, self.args.jobs, f"{option}'s pods")
        watcher.stop()
        return result

    def apply(self, namespace: str, name: str) -> float:
        """Apply one TrainingJob; when its request started."""
        started = time.monotonic()
        self.custom.create_namespaced_custom_object(
            "tailor.dev", "v1alpha1", namespace, "trainingjobs",
            {"apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
             "metadata": {"name": name}, "spec": SPEC})
        return started

    def idle(self, namespace: str, watcher: JobWatcher) -> list[float]:
        """One TrainingJob at a time, each waited for: the operator's latency on an idle stack."""
        latencies = []
        for i in range(self.args.idle_jobs):
            name = f"idle-{i:02d}"
            started = self.apply(namespace, name)
            eventually(lambda: name in watcher.seen, timeout=60,  # noqa: B023 (called now)
                       what=f"{name}'s Job", interval=0.01)
            latencies.append(watcher.seen[name] - started)
        return latencies

    def recorded(self, namespace: str) -> bool:
        answer: Any = self.custom.list_namespaced_custom_object(
            "tailor.dev", "v1alpha1", namespace, "trainingjobs")
        items: list[dict[str, Any]] = answer["items"]
        return all(i.get("status", {}).get("workers", {}).get("active") == 1 for i in items)

    def tailor(self, tag: str, idle: bool, option: str
               ) -> dict[str, Any]:  # long: one run, phase by phase
        ns = self.namespace(tag)
        log = self.stack.dir / "logs" / f"operator-bench-{tag}.log"
        operator = OperatorProcess(self.stack, log, "--namespace", ns)
        try:
            watcher = JobWatcher(self.api, ns)
            idle_latencies = self.idle(ns, watcher) if idle else []
            pid = operator.process.pid
            before_requests, before_cpu = operator_requests(operator.metrics_url), cpu_seconds(pid)
            # The burst is applied by the ceiling's own client (its best option so far), as
            # its own process.
            applied = self.client(option, ns, "trainingjobs")
            result = summarize("tailor", applied["started"], watcher, self.args.jobs,
                               self.args.timeout)
            cpu_created = cpu_seconds(pid) - before_cpu
            # Until the pods exist: every Job has an active (pending) pod and the operator has
            # recorded it in status.
            self.wait_pods(watcher, self.args.jobs + len(idle_latencies), "every Job's pod")
            eventually(lambda: self.recorded(ns), timeout=self.args.timeout,
                       what="status to show the pods", interval=1)
            jobs = self.args.jobs
            result.update(
                cpu_created_per_1000=cpu_created * 1000 / jobs,
                cpu_per_1000=(cpu_seconds(pid) - before_cpu) * 1000 / jobs,
                requests_per_job=(operator_requests(operator.metrics_url) - before_requests)
                / jobs, rss_mib=peak_rss_mib(pid), idle=idle_latencies, applier=option)
            print(line(result) + f"; CPU until the Jobs exist {cpu_created * 1000 / jobs:.1f}"
                  "s/1000 jobs", flush=True)
            if idle_latencies:
                print(f"{'idle':>18}: {len(idle_latencies)} jobs one at a time; apply->Job "
                      f"p50 {statistics.median(idle_latencies):.3f}s "
                      f"max {max(idle_latencies):.3f}s", flush=True)
            watcher.stop()
        finally:
            operator.stop()
        return result


def configuration(stack: StackHandle, args: argparse.Namespace) -> None:
    server = json.loads(stack.kubectl("version", "-o", "json").stdout)["serverVersion"]
    packages = {p: version(p) for p in ("kopf", "kubernetes", "urllib3", "aiohttp")}
    mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    print(f"machine: {platform.node()}, {os.cpu_count()} vCPUs, {int(mem) // 2**20} GiB; "
          f"python {platform.python_version()}; Kubernetes {server['gitVersion']}; {packages}")
    print(f"{args.jobs} jobs per run, {args.rounds} rounds; workers unschedulable")
    print(f"ceiling: own process, raw JSON, Service and Job of a job at once, options "
          f"{args.ceiling_options} (threads:N = urllib3 pool of 2N connections, N job threads "
          f"+ N Service threads; asyncio:N = aiohttp, N jobs in flight)")
    print("tailor: python -m tailor --namespace <ns> (own process, defaults); the burst of "
          "TrainingJobs is applied by the ceiling's client (its best option) as its own "
          "process; the idle jobs one at a time by the bench process")
    print(f"load average before: {Path('/proc/loadavg').read_text().strip()}", flush=True)


Results = list[dict[str, Any]]


def run(bench: Bench, args: argparse.Namespace) -> tuple[Results, Results]:
    ceilings: Results = []
    tailors: Results = []
    options = args.ceiling_options.split(",")
    for i, option in enumerate(options):
        ceilings.append(bench.ceiling(option, f"r1c{i}"))
    best = max(ceilings, key=lambda r: r["jobs_per_s"])["option"]
    tailors.append(bench.tailor("r1t", idle=args.idle_jobs > 0, option=best))
    for r in range(2, args.rounds + 1):
        # Alternate: this round Tailor first, then the ceiling's best option.
        tailors.append(bench.tailor(f"r{r}t", idle=False, option=best))
        ceilings.append(bench.ceiling(best, f"r{r}c"))
    return ceilings, tailors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--rounds", type=int, default=2,
                        help="round 1: every ceiling option, then Tailor; later rounds: Tailor, "
                             "then the ceiling's best option")
    parser.add_argument("--ceiling-options", default="threads:8,threads:16,threads:32,"
                        "threads:64,asyncio:64")
    parser.add_argument("--idle-jobs", type=int, default=20,
                        help="TrainingJobs applied one at a time before round 1's burst")
    args = parser.parse_args()
    stack, _ = acquire_stack()
    stack.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    configuration(stack, args)
    bench = Bench(stack, args)
    try:
        ceilings, tailors = run(bench, args)
        summary(ceilings, tailors)
    finally:
        bench.drop_all()
    print(f"namespace deletion requested; load average {Path('/proc/loadavg').read_text().strip()}")


def summary(ceilings: Results, tailors: Results) -> None:
    ceiling = max(ceilings, key=lambda r: r["jobs_per_s"])
    tailor = max(tailors, key=lambda r: r["jobs_per_s"])
    idle = tailors[0]["idle"]
    ratio = tailor["jobs_per_s"] / ceiling["jobs_per_s"]
    print(f"load average after: {Path('/proc/loadavg').read_text().strip()}")
    print(f"best ceiling: {line(ceiling, stamp=False)}")
    print(f"best tailor:  {line(tailor, stamp=False)}")
    print(f"throughput ratio tailor/ceiling = {ratio:.2f} (target >= 0.33)")
    print(f"CPU seconds per 1000 jobs: operator {tailor['cpu_created_per_1000']:.1f} until the "
          f"Jobs exist, {tailor['cpu_per_1000']:.1f} until status shows the pods; ceiling "
          f"process {ceiling['cpu_per_1000']:.1f}")
    if idle:
        print(f"apply->children on an idle stack p50 {statistics.median(idle):.3f}s "
              f"(target <= 1 s)")
    print(f"operator peak RSS {tailor['rss_mib']:.0f} MiB (target <= 300 MB); "
          f"ceiling process {ceiling['rss_mib']:.0f} MiB")
    print(f"operator API requests per job until its pods exist: "
          f"{tailor['requests_per_job']:.2f} (target <= 8); ceiling "
          f"{ceiling['requests_per_job']:.2f}")
    print(json.dumps({"ceilings": ceilings, "tailors": tailors, "ratio": ratio}))


if __name__ == "__main__":
    main()
