"""`make demo`: the story so far, on the local stack.

Starts the operator, applies `examples/trainingjob-custom.yaml` (two torchrun workers that
rendezvous through the headless Service and all-reduce over gloo) and follows the
TrainingJob's status until it finishes. The full story (fine-tune on BBC News, promote, drift,
retrain) grows here as the DriftMonitor lands.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from tailor_localstack.testing import OperatorProcess, acquire_stack, eventually

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "tailor-demo"
EXAMPLE = REPO / "examples" / "trainingjob-custom.yaml"
TIMEOUT_SECONDS = 600


def describe(status: dict[str, Any]) -> str:
    true = sorted(c["type"] for c in status.get("conditions", []) if c["status"] == "True")
    workers = status.get("workers", {})
    return (f"phase={status.get('phase', '-'):<10} workers={workers.get('summary', '-'):<5} "
            f"restarts={workers.get('restarts', 0)} conditions={','.join(true) or '-'}")


def main() -> int:
    print("== Tailor demo ==")
    stack, _ = acquire_stack()
    kubectl = stack.kubectl
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", timeout=180)
    kubectl("create", "namespace", NAMESPACE)
    eventually(lambda: kubectl("get", "sa", "default", "-n", NAMESPACE,
                               check=False).returncode == 0, timeout=30,
               what="the namespace's default ServiceAccount")
    print("-> starting the operator (log: .tailor/logs/operator-demo.log)")
    operator = OperatorProcess(stack, stack.dir / "logs" / "operator-demo.log",
                               "--namespace", NAMESPACE)
    try:
        print(f"-> kubectl apply -n {NAMESPACE} -f {EXAMPLE.relative_to(REPO)}")
        kubectl("apply", "-n", NAMESPACE, "-f", str(EXAMPLE))
        name = "allreduce-smoke"
        started, last = time.monotonic(), ""
        while True:
            result = kubectl("get", "tj", name, "-n", NAMESPACE, "-o", "json")
            status = json.loads(result.stdout).get("status", {})
            line = describe(status)
            if line != last:
                print(f"   {time.monotonic() - started:5.1f}s  {line}")
                last = line
            if status.get("phase") in ("Succeeded", "Failed"):
                break
            if time.monotonic() - started > TIMEOUT_SECONDS:
                print("the TrainingJob did not finish in time", file=sys.stderr)
                return 1
            time.sleep(0.5)  # a progress display: refresh twice a second
        print(kubectl("get", "tj,job,pods,svc", "-n", NAMESPACE).stdout)
        pods = json.loads(kubectl("get", "pods", "-n", NAMESPACE, "-l",
                                  f"tailor.dev/trainingjob={name}", "-o", "json").stdout)
        for pod in sorted(p["metadata"]["name"] for p in pods["items"]):
            lines = kubectl("logs", pod, "-n", NAMESPACE).stdout.strip().splitlines()
            print(f"   {pod}: {lines[-1] if lines else ''}")
    finally:
        operator.stop()
    state = stack.state
    print(f"\nTrainingJob {status['phase']}. The stack stays up (`make down` stops it); "
          f"`source {stack.dir / 'env'}` to use kubectl, `make operator` to run the operator.")
    print(f"   MinIO      {stack.env['MINIO_CONSOLE_URL']}  (user {state.s3_access_key}; "
          f"password in .tailor/env)")
    print(f"   MLflow     {state.mlflow_uri}")
    print(f"   Prometheus {state.prometheus_url}")
    return 0 if status["phase"] == "Succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
