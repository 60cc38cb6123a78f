"""The operator's own configuration: command-line flags and environment, parsed once at start."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

DEFAULT_TRAINER_IMAGE = "ghcr.io/tailor-dev/tailor-trainer:0.1.0"


@dataclass(frozen=True)
class OperatorSettings:
    trainer_image: str = DEFAULT_TRAINER_IMAGE
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    metrics_port: int = 8000
    liveness_port: int = 8080
    bind_address: str = "0.0.0.0"  # noqa: S104 (a pod's own address; no host network)
    progress_interval: float = 10.0
    trial_interval: float = 2.0  # between reads of running trials' validation curves (pruning)
    # Cluster-wide defaults for jobs that leave them out (the Helm chart's `defaults`).
    default_s3_endpoint: str | None = None
    default_s3_region: str | None = None
    default_tracking_uri: str | None = None
    webhook_port: int = 8443
    webhook_token_file: str | None = None  # without one, the alert webhook is off
    # Extra namespace patterns Kopf must not serve (tests run a private operator per namespace).
    exclude_namespaces: tuple[str, ...] = field(default_factory=tuple)


def parse(argv: list[str] | None = None) -> OperatorSettings:
    parser = argparse.ArgumentParser(prog="python -m tailor",
                                     description="Run the Tailor operator.")
    parser.add_argument("--namespace", "-n", action="append", default=[],
                        help="serve only this namespace (repeatable; globs allowed); "
                             "default: all namespaces")
    parser.add_argument("--exclude-namespace", action="append", default=[],
                        help="never serve namespaces matching this glob (repeatable)")
    parser.add_argument("--trainer-image",
                        default=os.environ.get("TAILOR_TRAINER_IMAGE", DEFAULT_TRAINER_IMAGE),
                        help="the image of worker pods when a TrainingJob names none")
    parser.add_argument("--metrics-port", type=int,
                        default=int(os.environ.get("TAILOR_METRICS_PORT", "8000")))
    parser.add_argument("--liveness-port", type=int,
                        default=int(os.environ.get("TAILOR_LIVENESS_PORT", "8080")))
    parser.add_argument("--bind-address", default=os.environ.get("TAILOR_BIND_ADDRESS",
                                                                   "0.0.0.0"))  # noqa: S104
    parser.add_argument("--progress-interval", type=float, default=10.0,
                        help="seconds between reads of a running job's progress")
    parser.add_argument("--trial-interval", type=float, default=2.0,
                        help="seconds between reads of running trials' validation curves "
                             "(how soon a trial is pruned)")
    parser.add_argument("--webhook-port", type=int,
                        default=int(os.environ.get("TAILOR_WEBHOOK_PORT", "8443")),
                        help="port of the Alertmanager webhook (POST /alerts)")
    parser.add_argument("--webhook-token-file",
                        default=os.environ.get("TAILOR_WEBHOOK_TOKEN_FILE"),
                        help="file holding the webhook's bearer token (a mounted Secret key); "
                             "the webhook is off without it")
    args = parser.parse_args(argv)
    return OperatorSettings(
        trainer_image=args.trainer_image, namespaces=tuple(args.namespace),
        metrics_port=args.metrics_port, liveness_port=args.liveness_port,
        bind_address=args.bind_address, progress_interval=args.progress_interval,
        trial_interval=args.trial_interval,
        exclude_namespaces=tuple(args.exclude_namespace),
        webhook_port=args.webhook_port, webhook_token_file=args.webhook_token_file,
        default_s3_endpoint=os.environ.get("TAILOR_DEFAULT_S3_ENDPOINT") or None,
        default_s3_region=os.environ.get("TAILOR_DEFAULT_S3_REGION") or None,
        default_tracking_uri=os.environ.get("TAILOR_DEFAULT_MLFLOW_TRACKING_URI") or None,
    )
