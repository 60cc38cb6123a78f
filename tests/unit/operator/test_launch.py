"""The trainer's launcher keeps the trainer's exit codes (torchrun alone turns them into 1)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tailor_contract.trainer_api import EXIT_PERMANENT, EXIT_RETRYABLE
from tailor_trainer.launch import exit_code_of

WORKER = "import os, sys; sys.exit(int(os.environ['CODES'].split(',')[int(os.environ['RANK'])]))"


@pytest.mark.parametrize(("codes", "expected"), [
    ([0, 0], 1), ([0, EXIT_PERMANENT], EXIT_PERMANENT), ([3, EXIT_RETRYABLE], EXIT_RETRYABLE),
    ([0, 3], 3), ([-9, 0], 137), ([-15, EXIT_PERMANENT], EXIT_PERMANENT),
])
def test_exit_code_mapping(codes: list[int], expected: int) -> None:
    assert exit_code_of(codes) == expected


@pytest.mark.parametrize(("codes", "expected"), [("0,0", 0), ("0,42", EXIT_PERMANENT),
                                                 ("3,0", 3)])
def test_two_local_workers_exit_with_the_trainers_code(codes: str, expected: int) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tailor_trainer.launch", "--standalone", "--nnodes", "1",
         "--nproc-per-node", "2", "--no-python", sys.executable, "-c", WORKER],
        env={"CODES": codes, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=120)
    assert result.returncode == expected, result.stderr[-2000:]
