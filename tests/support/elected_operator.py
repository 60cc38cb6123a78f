"""`python -m tailor` behind leader election: `python -m tests.support.elected_operator
--leader-elect [--leader-elect-...] <the operator's own arguments>`.

tailor.leadership.run_when_leader around tailor.main.main, with the election's flags parsed
here, for tests that run two replicas. Once the operator's own settings carry these flags (and
main calls run_when_leader), `python -m tailor --leader-elect` does the same; until then the
flags are taken off before the operator's parser sees them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass

from tailor.leadership import run_when_leader
from tailor.main import main
from tailor.settings import parse


@dataclass(frozen=True)
class Settings:
    leader_elect: bool
    leader_elect_resource_name: str
    leader_elect_resource_namespace: str | None
    leader_elect_lease_duration: int
    leader_elect_renew_deadline: float
    leader_elect_retry_period: float
    bind_address: str
    liveness_port: int
    metrics_port: int
    webhook_port: int
    webhook_token_file: str | None


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--leader-elect", action="store_true")
    parser.add_argument("--leader-elect-resource-name", default="tailor-operator")
    parser.add_argument("--leader-elect-resource-namespace", default=os.environ.get("POD_NAMESPACE"))
    parser.add_argument("--leader-elect-lease-duration", type=int, default=15)
    parser.add_argument("--leader-elect-renew-deadline", type=float, default=10.0)
    parser.add_argument("--leader-elect-retry-period", type=float, default=2.0)
    election, rest = parser.parse_known_args(argv)
    operator = parse(rest)
    settings = Settings(**vars(election), bind_address=operator.bind_address,
                        liveness_port=operator.liveness_port, metrics_port=operator.metrics_port,
                        webhook_port=operator.webhook_port,
                        webhook_token_file=operator.webhook_token_file)
    # Logging as the operator configures it, so the standby's lines reach the log too.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run_when_leader(settings, lambda: main(rest))


if __name__ == "__main__":
    run(sys.argv[1:])
