"""Fixtures of the integration layer: the CRDs installed, and the operator running."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest
from tailor_localstack.testing import OperatorProcess, StackHandle, eventually

REPO = Path(__file__).resolve().parents[2]
CRD_NAMES = ("trainingjobs.tailor.dev", "driftmonitors.tailor.dev")


def _established(stack: StackHandle, name: str) -> bool:
    result = stack.kubectl(
        "get",
        "crd",
        name,
        "-o",
        'jsonpath={.status.conditions[?(@.type=="Established")].status}',
        check=False,
    )
    return result.returncode == 0 and result.stdout.strip() == "True"


@pytest.fixture(scope="session")
def crds(stack: StackHandle) -> None:
    """Server-side apply of crds/ (a re-apply is a no-op), then wait until both are served."""
    stack.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for name in CRD_NAMES:
        eventually(
            functools.partial(_established, stack, name),
            timeout=60,
            what=f"CRD {name} to be Established",
        )
    # Established means served; kubectl's discovery must see the new kinds too.
    eventually(
        lambda: (
            stack.kubectl("get", "trainingjobs,driftmonitors", "-A", check=False).returncode == 0
        ),
        timeout=60,
        what="kubectl to discover the tailor.dev kinds",
    )


SOLO_NAMESPACES = "t-test-solo-*"
"""Tests whose names start with `test_solo_` run a private operator in their namespace."""


@pytest.fixture(scope="session")
def operator(stack: StackHandle, crds: None) -> Iterator[OperatorProcess]:
    process = OperatorProcess(stack, stack.dir / "logs" / "operator-tests.log",
                              "--exclude-namespace", SOLO_NAMESPACES)
    yield process
    process.stop()
