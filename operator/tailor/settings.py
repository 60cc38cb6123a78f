"""The operator's own configuration: command-line flags and environment, parsed once at start."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields

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
    # Every object re-assessed once per interval (spread over it), so a lost event or a failed
    # status patch converges without another event; 0 turns it off.
    resync_interval: float = 300.0
    api_retries: int = 6  # attempts per Kubernetes API request (1: none retried)
    api_retry_deadline: float = 30.0  # no retry once a request started this long ago
    api_timeout: float = 30.0  # seconds a request waits for its answer
    # Cluster-wide defaults for jobs that leave them out (the Helm chart's `defaults`).
    default_s3_endpoint: str | None = None
    default_s3_region: str | None = None
    default_tracking_uri: str | None = None
    webhook_port: int = 8443
    webhook_token_file: str | None = None  # without one, the alert webhook is off
    webhook_tls_cert_file: str | None = None  # with the key: HTTPS; without: plain HTTP
    webhook_tls_key_file: str | None = None
    # Extra namespace patterns Kopf must not serve (tests run a private operator per namespace).
    exclude_namespaces: tuple[str, ...] = field(default_factory=tuple)
    # Leader election (tailor.leadership): off unless --leader-elect (the chart turns it on).
    leader_elect: bool = False
    leader_elect_resource_name: str = "tailor-operator"
    leader_elect_resource_namespace: str | None = None  # default: $POD_NAMESPACE
    leader_elect_lease_duration: int = 15
    leader_elect_renew_deadline: float = 10.0
    leader_elect_retry_period: float = 2.0


def _parser() -> argparse.ArgumentParser:
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
                        help="seconds between reads of a running job's progress, and between "
                             "checks of workers that are slow to start")
    parser.add_argument("--trial-interval", type=float, default=2.0,
                        help="seconds between reads of running trials' validation curves "
                             "(how soon a trial is pruned)")
    _add_api_flags(parser)
    _add_webhook_flags(parser)
    _add_leader_flags(parser)
    return parser


def _add_api_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resync-interval", type=_non_negative, default=300.0,
                        help="seconds in which every TrainingJob and DriftMonitor is "
                             "re-assessed once, spread over the interval (0: never)")
    parser.add_argument("--api-retries", type=_positive_int, default=6,
                        help="attempts per Kubernetes API request that fails transiently "
                             "(connection errors, timeouts, 429, 5xx); 1 retries nothing")
    parser.add_argument("--api-retry-deadline", type=_non_negative, default=30.0,
                        help="seconds after which a failing request is not retried again")
    parser.add_argument("--api-timeout", type=_positive, default=30.0,
                        help="seconds a Kubernetes API request waits for its answer")


def _add_leader_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--leader-elect", action="store_true",
                        help="act only while holding the leader Lease (run 2+ replicas): a "
                             "standby waits, answering /healthz and /metrics")
    parser.add_argument("--leader-elect-resource-name", default="tailor-operator",
                        help="the leader Lease's name")
    parser.add_argument("--leader-elect-resource-namespace",
                        default=os.environ.get("POD_NAMESPACE") or None,
                        help="the leader Lease's namespace (default: $POD_NAMESPACE)")
    parser.add_argument("--leader-elect-lease-duration", type=_positive_int, default=15,
                        help="seconds a standby waits after the last renewal it saw")
    parser.add_argument("--leader-elect-renew-deadline", type=_positive, default=10.0,
                        help="seconds without a renewal after which the leader exits")
    parser.add_argument("--leader-elect-retry-period", type=_positive, default=2.0,
                        help="seconds between renewals, and between a standby's attempts")


def parse(argv: list[str] | None = None) -> OperatorSettings:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.leader_elect and not args.leader_elect_resource_namespace:
        parser.error("--leader-elect needs the Lease's namespace: set POD_NAMESPACE or "
                     "--leader-elect-resource-namespace")
    if not args.leader_elect_lease_duration > args.leader_elect_renew_deadline \
            > args.leader_elect_retry_period:
        parser.error("need --leader-elect-lease-duration > --leader-elect-renew-deadline > "
                     "--leader-elect-retry-period")
    if bool(args.webhook_tls_cert_file) != bool(args.webhook_tls_key_file):
        parser.error("--webhook-tls-cert-file and --webhook-tls-key-file go together")
    # Every flag is the setting of the same name; the rest come from the environment.
    flags = {f.name: getattr(args, f.name) for f in fields(OperatorSettings)
             if hasattr(args, f.name)}
    return OperatorSettings(
        **flags | {"namespaces": tuple(args.namespace),
                   "exclude_namespaces": tuple(args.exclude_namespace)},
        default_s3_endpoint=os.environ.get("TAILOR_DEFAULT_S3_ENDPOINT") or None,
        default_s3_region=os.environ.get("TAILOR_DEFAULT_S3_REGION") or None,
        default_tracking_uri=os.environ.get("TAILOR_DEFAULT_MLFLOW_TRACKING_URI") or None,
    )


def _add_webhook_flags(parser: argparse.ArgumentParser) -> None:
    """The alert webhook's flags (docs/operator.md, "Alerts")."""
    parser.add_argument("--webhook-port", type=int,
                        default=int(os.environ.get("TAILOR_WEBHOOK_PORT", "8443")),
                        help="port of the Alertmanager webhook (POST /alerts)")
    parser.add_argument("--webhook-token-file",
                        default=os.environ.get("TAILOR_WEBHOOK_TOKEN_FILE"),
                        help="file holding the webhook's bearer token (a mounted Secret key); "
                             "the webhook is off without it")
    parser.add_argument("--webhook-tls-cert-file",
                        default=os.environ.get("TAILOR_WEBHOOK_TLS_CERT_FILE"),
                        help="the webhook's TLS certificate (PEM, a mounted Secret's tls.crt); "
                             "re-read when it changes. Without it the webhook speaks plain HTTP")
    parser.add_argument("--webhook-tls-key-file",
                        default=os.environ.get("TAILOR_WEBHOOK_TLS_KEY_FILE"),
                        help="the private key of --webhook-tls-cert-file (PEM, tls.key)")


def _number(text: str, *, low: float, inclusive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value < low or (value == low and not inclusive) or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"must be {'at least' if inclusive else 'more than'} {low:g}: {text!r}")
    return value


def _non_negative(text: str) -> float:
    return _number(text, low=0.0, inclusive=True)


def _positive(text: str) -> float:
    return _number(text, low=0.0, inclusive=False)


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1: {text!r}")
    return int(text)
