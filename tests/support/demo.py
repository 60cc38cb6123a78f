"""`make demo`: the whole story on the local stack (see tests/support/story.py).

`make demo` runs `python -m tests.support.demo` from the repository root, so that
`tests.support` is importable.

Train a text classifier through the operator and promote it over the generic model, serve it,
shift production data, watch the DriftMonitor catch the accuracy drop and retrain with the
labelled production examples, promote the retrain on the recent holdout, serve it, and end with
a summary of every verdict, the accuracies and the URLs. `--without-production-data` tells the
other ending: the retrain learns nothing new and the old model stays in production.
`make demo-smoke` runs only the quick distributed smoke test (examples/trainingjob-custom.yaml).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support import chart_operator
from tests.support.serving import Served
from tests.support.story import MODEL, MONITOR, Size, Story, condition, part_line
from tests.support.testing import StackHandle, acquire_stack, eventually

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "tailor-demo"


class Phases:
    """Each phase's wall time, printed as it ends and again in the summary."""

    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        print(f"-> {name}")
        started = time.monotonic()
        try:
            yield
        finally:
            self.times.append((name, time.monotonic() - started))
            print(f"   ({self.times[-1][1]:.0f}s)")


def prepare(stack: StackHandle) -> None:
    kubectl = stack.kubectl
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", timeout=300)
    kubectl("create", "namespace", NAMESPACE)
    eventually(lambda: kubectl("get", "sa", "default", "-n", NAMESPACE,
                               check=False).returncode == 0, timeout=30,
               what="the namespace's default ServiceAccount")


def promoted(status: dict[str, Any]) -> bool:
    return bool(status.get("promotion", {}).get("verdict") == "Promoted")


def tell(story: Story, phases: Phases, with_production_data: bool,
         record: dict[str, Any]) -> int:
    """The story, phase by phase; what happened goes into `record` for the summary."""
    with phases("1. data to MinIO"):
        story.upload()
    with phases("2. training"):
        record["first"] = trained = story.train()
    if not promoted(trained):
        print("   the first fine-tune was not promoted: nothing in production to serve")
        return 1
    with phases("3. serving the production model: the usual feed, then a shifted one"):
        record["served"] = [story.serve("normal", "day-1"), story.serve("shifted", "day-2")]
    with phases("4. monitoring, and the retrain it starts"):
        monitored = story.monitor(include_production_data=with_production_data)
        record["retrain"] = retrained = story.retrain(monitored)
    if not promoted(retrained):
        pointer = story.pointer() or {}
        print(f"   {pointer.get('runId')} stays in production")
        return 1 if with_production_data else 0
    with phases("5. serving the new production model on the shifted feed"):
        record["served"].append(story.serve("after", "day-3"))
        record["monitor"] = story.cleared()
    return 0


def summary(story: Story, phases: Phases, record: dict[str, Any]) -> None:
    print("\n== Summary ==")
    for title, key in (("first fine-tune", "first"), ("retrain after the drift", "retrain")):
        status = record.get(key)
        if status is None:
            continue
        promotion = status.get("promotion", {})
        print(f"{title}: {status.get('runId')} {promotion.get('verdict')} "
              f"({promotion.get('reason')})")
        for part in promotion.get("parts") or []:
            print(f"   {part_line(part)}")
    served: list[Served] = record.get("served", [])
    if served:
        print("accuracy served:")
        for s in served:
            feed = "shifted feed" if s.shifted else "usual feed  "
            print(f"   {s.part}  {feed}  {s.run_id}  {s.accuracy:.3f} on {s.examples} articles")
    if "monitor" in record:
        below = condition(record["monitor"], "AccuracyBelowThreshold")
        print(f"{MONITOR}: AccuracyBelowThreshold {below.get('status')} "
              f"({below.get('reason')}: {below.get('message')})")
    pointer = story.pointer() or {}
    print(f"in production: {pointer.get('runId')} "
          f"({story.uri(f'models/{MODEL}/production.json')})")
    print("time per phase: " + ", ".join(f"{name.split('.')[0]}. {seconds:.0f}s"
                                         for name, seconds in phases.times)
          + f"; total {sum(t for _, t in phases.times):.0f}s")


def urls(stack: StackHandle, story: Story) -> None:
    state = stack.state
    print(stack.kubectl("get", "tj,dm", "-n", NAMESPACE).stdout)
    # Every pod ran an image built here, on the kubelet: the operator's and the trainer's.
    print(stack.kubectl("get", "pods", "-A", "-o", "custom-columns=NAMESPACE:.metadata.namespace,"
                        "POD:.metadata.name,IMAGE:.spec.containers[0].image,"
                        "STATUS:.status.phase,NODE:.spec.nodeName").stdout)
    print(f"The stack stays up (`make down` stops it) with the operator installed (`helm -n "
          f"tailor-system status tailor`); `source {stack.dir / 'env'}` to use kubectl.")
    print(f"   MinIO      {stack.env['MINIO_CONSOLE_URL']}  (bucket {story.bucket}; user "
          f"{state.s3_access_key}, password in .tailor/env)")
    print(f"   MLflow     {state.mlflow_uri}  (experiment tailor-demo)")
    print(f"   Prometheus {state.prometheus_url}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true",
                        help="only run examples/trainingjob-custom.yaml")
    parser.add_argument("--without-production-data", action="store_true",
                        help="the other ending: a retrain without the labelled production "
                             "examples, which leaves the old model in production")
    args = parser.parse_args()
    print("== Tailor demo ==")
    stack, _ = acquire_stack()
    prepare(stack)
    print("-> installing the operator with its Helm chart (release tailor in tailor-system)")
    operator = chart_operator.install(stack, namespace="tailor-system", release="tailor",
                                      serve=[NAMESPACE])
    print(f"   operator pod Ready {operator.ready_after:.1f}s after `helm upgrade --install`")
    story = Story(stack, NAMESPACE, f"tailor-demo-{secrets.token_hex(3)}", Size())
    phases = Phases()
    record: dict[str, Any] = {}
    try:
        if args.smoke:
            stack.kubectl("apply", "-n", NAMESPACE, "-f", str(REPO / "examples" /
                                                               "trainingjob-custom.yaml"))
            status = story.follow("allreduce-smoke")
            return 0 if status["phase"] == "Succeeded" else 1
        try:
            code = tell(story, phases, not args.without_production_data, record)
        except AssertionError as exc:  # a step that did not happen: say which, then sum up
            print(f"   {exc}")
            code = 1
    finally:
        # The operator stays installed, as on a cluster; its log is kept beside the stack's.
        (stack.dir / "logs" / "operator-demo.log").write_text(operator.logs())
    summary(story, phases, record)
    urls(stack, story)
    return code


if __name__ == "__main__":
    sys.exit(main())
