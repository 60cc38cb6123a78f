"""`make demo`: the whole story on the local stack (see tests/support/story.py).

`make demo` runs `python -m tests.support.demo` from the repository root, so that
`tests.support` is importable.

Train a text classifier through the operator, serve it, shift production data, watch the
DriftMonitor catch the accuracy drop and retrain, and end with a summary and the URLs.
`make demo-smoke` runs only the quick distributed smoke test (examples/trainingjob-custom.yaml).
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

from tests.support.story import Size, Story
from tests.support.testing import OperatorProcess, acquire_stack, eventually

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "tailor-demo"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true",
                        help="only run examples/trainingjob-custom.yaml")
    args = parser.parse_args()
    print("== Tailor demo ==")
    stack, _ = acquire_stack()
    kubectl = stack.kubectl
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", timeout=300)
    kubectl("create", "namespace", NAMESPACE)
    eventually(lambda: kubectl("get", "sa", "default", "-n", NAMESPACE,
                               check=False).returncode == 0, timeout=30,
               what="the namespace's default ServiceAccount")
    print("-> starting the operator (log: .tailor/logs/operator-demo.log)")
    operator = OperatorProcess(stack, stack.dir / "logs" / "operator-demo.log",
                               "--namespace", NAMESPACE)
    story = Story(stack, NAMESPACE, f"tailor-demo-{secrets.token_hex(3)}", Size())
    try:
        if args.smoke:
            kubectl("apply", "-n", NAMESPACE, "-f", str(REPO / "examples" /
                                                         "trainingjob-custom.yaml"))
            status = story.follow("allreduce-smoke")
            return 0 if status["phase"] == "Succeeded" else 1
        print("-> 1. data to MinIO")
        story.upload()
        print("-> 2. training")
        trained = story.train()
        if trained.get("phase") != "Succeeded":
            return 1
        run_uri = trained["artifacts"]["runUri"]
        print("-> 3. serving: normal traffic, then a shifted feed")
        story.serve(run_uri, shift=False, part="day-1")
        story.serve(run_uri, shift=True, part="day-2")
        print("-> 4. monitoring")
        monitored = story.monitor()
        retrained = story.follow(monitored["lastRetrain"]["name"])
        folded = retrained.get("triggeredBy", {}).get("productionData") or {}
        if folded.get("rows"):
            print(f"   trained with {folded['rows']} labelled production examples folded in "
                  f"({folded['uri']})")
        story.describe(retrained)
    finally:
        operator.stop()
    state = stack.state
    print("\n== Summary ==")
    print(kubectl("get", "tj,dm", "-n", NAMESPACE).stdout)
    print(f"The stack stays up (`make down` stops it); `source {stack.dir / 'env'}` to use "
          "kubectl, `make operator` to run the operator.")
    print(f"   MinIO      {stack.env['MINIO_CONSOLE_URL']}  (bucket {story.bucket}; user "
          f"{state.s3_access_key}, password in .tailor/env)")
    print(f"   MLflow     {state.mlflow_uri}  (experiment tailor-demo)")
    print(f"   Prometheus {state.prometheus_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
