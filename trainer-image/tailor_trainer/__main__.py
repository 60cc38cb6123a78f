"""`python -m tailor_trainer`: the training process that torchrun starts in every worker.

Started outside torchrun (no LOCAL_RANK in the environment), it runs as a single process
(world size 1), which is handy on a laptop; pods use `python -m tailor_trainer.launch -m
tailor_trainer` so the exit codes survive torchrun.
"""

from __future__ import annotations

import sys

from tailor_trainer.run import main

if __name__ == "__main__":
    sys.exit(main())
