"""`python -m tailor_trainer.launch [torchrun arguments]`: torchrun whose exit code is the
trainer's.

torchrun exits 1 whatever its workers exit with, which would hide the trainer's documented
exit codes (contract.py) from Kubernetes and the operator. This runs torchrun's own argument
parsing and launch in the same process and maps the workers' exit codes: EXIT_PERMANENT if
any worker exited with it (bad data or configuration: no retry), else EXIT_RETRYABLE if any
did, else the first worker's code (128 + N for a worker killed by signal N). torchrun's options
come from its arguments or, as the operator sets them, from PET_* variables:

    python -m tailor_trainer.launch -m tailor_trainer                 # built-in recipes
    python -m tailor_trainer.launch --no-python <command> [args...]   # task: custom

When the workers failed without leaving a termination message (a crash or a kill before
rank 0 could write one), the launcher writes a short one from the exit codes, so the operator
always has a reason to show.
"""

from __future__ import annotations

import os
import sys

from tailor_contract.constants import REASON_WORKER_FAILED
from tailor_contract.trainer_api import EXIT_PERMANENT, EXIT_RETRYABLE, TerminationSummary
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run

from tailor_trainer.config import DEFAULT_TERMINATION_LOG, ENV_TERMINATION_LOG


def exit_code_of(codes: list[int]) -> int:
    """The exit code after a failure of workers that exited with `codes` (negative: killed
    by a signal); 1 when no worker reported a failing code of its own."""
    normalized = [128 - code if code < 0 else code for code in codes]
    for wanted in (EXIT_PERMANENT, EXIT_RETRYABLE):
        if wanted in normalized:
            return wanted
    failures = [code for code in normalized if code != 0]
    return failures[0] if failures else 1


def write_fallback_summary(codes: list[int], code: int) -> None:
    """A termination message from the exit codes, unless the trainer already wrote one."""
    path = os.environ.get(ENV_TERMINATION_LOG, DEFAULT_TERMINATION_LOG)
    try:
        if os.path.getsize(path) > 0:
            return
    except OSError:
        pass
    summary = TerminationSummary(
        outcome="Failed", reason=REASON_WORKER_FAILED, permanent=code == EXIT_PERMANENT,
        message=f"training processes exited with {codes}; the pod exits {code}")
    try:
        with open(path, "w") as handle:
            handle.write(summary.to_message())
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)  # type: ignore[no-untyped-call]
    try:
        run(args)  # type: ignore[no-untyped-call]
    except ChildFailedError as error:
        codes = [failure.exitcode for failure in error.failures.values()]
        code = exit_code_of(codes)
        write_fallback_summary(codes, code)
        return code
    except SignalException as error:
        # The pod is being stopped; torchrun has already passed the signal to the workers
        # (which checkpoint on SIGTERM). 128 + N, as a shell would report it.
        return 128 + int(error.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
