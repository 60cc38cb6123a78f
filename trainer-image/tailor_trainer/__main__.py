"""`python -m tailor_trainer`: the training process that torchrun starts in every worker.

Started outside torchrun (no LOCAL_RANK in the environment), it runs as a single process
(world size 1), which is handy on a laptop; pods use `python -m tailor_trainer.launch -m
tailor_trainer` so the exit codes survive torchrun.
"""

from __future__ import annotations

import logging
import os
import sys

from tailor_trainer.run import main

if __name__ == "__main__":
    code = main()
    # By now the run is over: its artifacts and termination message are written and the process
    # group is destroyed. Leave without the interpreter's teardown, which only frees objects, but
    # where native extensions (gloo's threads, torch's and pyarrow's statics) are torn down in an
    # order nothing controls: 2 of 4 full test-suite runs saw a finished worker abort there
    # (SIGABRT, "terminate called without an active exception", exit 134 after a Succeeded or a
    # permanent-failure summary), which turned a verdict into a crash.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
