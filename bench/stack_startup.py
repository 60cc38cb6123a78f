"""Local stack start-up and pod start latency (issue: the real local stack).

Starts a throwaway stack in a temporary directory (binaries already cached) several times,
recording when the API server and the whole stack were ready; then creates pods one at a time
on the idle stack and measures create -> Running as seen through a watch. Prints a table;
results go to bench/RESULTS.md.

    ~/.cache/tailor/venv/bin/python -m bench.stack_startup   # from the repository root
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from kubernetes import client, config, watch
from tailor_devstack.nodeconf import SANDBOX_IMAGE
from tailor_devstack.stack import Stack

from tests.support.testing import eventually


def pod_latencies(kubeconfig: Path, count: int) -> list[float]:
    api = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    def has_default_account() -> bool:
        names = [sa.metadata.name for sa in
                 api.list_namespaced_service_account("default").items]
        return "default" in names

    eventually(has_default_account, timeout=30, what="the default ServiceAccount")
    latencies = []
    for i in range(count):
        body = client.V1Pod(
            metadata=client.V1ObjectMeta(name=f"bench-{i}"),
            spec=client.V1PodSpec(restart_policy="Never", containers=[client.V1Container(
                name="main", image=SANDBOX_IMAGE)]))
        stream = watch.Watch()
        started = time.monotonic()
        api.create_namespaced_pod("default", body)
        for event in stream.stream(api.list_namespaced_pod, "default",
                                   field_selector=f"metadata.name=bench-{i}",
                                   timeout_seconds=30):
            if event["object"].status.phase == "Running":
                latencies.append(time.monotonic() - started)
                stream.stop()
        api.delete_namespaced_pod(f"bench-{i}", "default", grace_period_seconds=0)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pods", type=int, default=30)
    args = parser.parse_args()
    api_ready, all_ready, latencies = [], [], []
    with tempfile.TemporaryDirectory(prefix="tailor-bench-") as tmp:
        for run in range(args.runs):
            stack = Stack(Path(tmp) / "stack")
            try:
                stack.up(progress=lambda _m: None)
                api_ready.append(stack.ready_after["kube-apiserver"])
                all_ready.append(max(stack.ready_after.values()))
                if run == args.runs - 1:
                    latencies = pod_latencies(stack.dir / "kubeconfig", args.pods)
            finally:
                stack.down(progress=lambda _m: None)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    print(f"make up (cached binaries), {args.runs} runs:")
    print(f"  API server ready  median {statistics.median(api_ready):5.1f}s  max "
          f"{max(api_ready):5.1f}s  (target <= 30 s)")
    print(f"  whole stack ready median {statistics.median(all_ready):5.1f}s  max "
          f"{max(all_ready):5.1f}s  (target <= 60 s)")
    print(f"pod create -> Running on an idle stack, {len(latencies)} pods:")
    print(f"  p50 {statistics.median(latencies):.3f}s  p99 {p99:.3f}s  max "
          f"{latencies[-1]:.3f}s  (target <= 3 s)")


if __name__ == "__main__":
    main()
