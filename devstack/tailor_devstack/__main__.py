"""`python -m tailor_devstack up|down|status`: what `make up`, `make down`, `make status` run."""

from __future__ import annotations

import argparse
import sys

from tailor_devstack.stack import Stack
from tailor_devstack.state import DEFAULT_GPUS, StackError


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tailor_devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the local stack (idempotent)")
    up.add_argument("--gpus", type=int, default=DEFAULT_GPUS,
                    help="nvidia.com/gpu the node advertises, for scheduling tests")
    up.add_argument("--timeout", type=float, default=120.0)
    sub.add_parser("down", help="stop it and remove its processes, mounts and networks")
    sub.add_parser("status", help="show each component and its health")
    args = parser.parse_args()
    stack = Stack()
    try:
        if args.command == "up":
            stack.up(gpus=args.gpus, timeout=args.timeout)
        elif args.command == "down":
            stack.down()
        else:
            state = stack.load_state()
            if state is None:
                print("the local stack is not running (`make up` starts it)")
                return 1
            health = stack.health(state)
            for name, ok in health.items():
                print(f"  {name:<24} {'ready' if ok else 'DOWN'}")
            print(f"  kubeconfig  {stack.dir / 'kubeconfig'}\n  env         {stack.dir / 'env'}")
            print(f"  S3 {state.s3_endpoint}  MLflow {state.mlflow_uri}  Prometheus "
                  f"{state.prometheus_url}  Alertmanager {state.alertmanager_url}")
            return 0 if all(health.values()) else 1
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
