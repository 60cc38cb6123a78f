"""Fixtures shared by every test layer.

`crds` installs the CustomResourceDefinitions once per session; `operator` runs the operator
(`python -m tailor`) for the session, serving only the namespaces of the tests that use it.

`stack` reuses a running local stack (`make up`) or starts one for the session and stops it at
the end (set TAILOR_KEEP_STACK=1 to keep it). `namespace` gives each test its own namespace.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest

from tests.support import chart_operator
from tests.support.chart_operator import ChartOperator
from tests.support.testing import (
    StackHandle,
    acquire_stack,
    create_namespace,
    install_crds,
    keep_stack,
)

STACK_LAYERS = ("integration", "e2e")


@pytest.fixture(autouse=True)
def storage_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that makes storage fail wants the failure now, not after the trainer has ridden
    out the "outage" for TAILOR_S3_RETRY_SECONDS (120 s); the ride itself has tests of its own
    (tests/unit/trainer/test_trainer_outage.py) and a chaos scenario (MinIO stopped for 30 s),
    whose pods do not inherit this."""
    monkeypatch.setenv("TAILOR_S3_RETRY_SECONDS", "0")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(f"tests/{layer}/" in str(item.path) for layer in STACK_LAYERS):
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session")
def stack() -> Iterator[StackHandle]:
    handle, started = acquire_stack()
    yield handle
    if started and not keep_stack():
        handle.stack.down(progress=lambda _message: None)


@pytest.fixture
def namespace(stack: StackHandle, request: pytest.FixtureRequest) -> Iterator[str]:
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    # Only tests that ask for the session's operator get a namespace it serves.
    prefix = "t-op-" if "operator" in request.fixturenames else "t-"
    # 32 random bits: parametrised tests share their 40-character slug, and a deleted namespace
    # keeps its name while it terminates (16 bits once collided among ~30 such names).
    name = f"{prefix}{slug}-{secrets.token_hex(4)}"
    create_namespace(stack, name)
    yield name
    stack.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def crds(stack: StackHandle) -> None:
    install_crds(stack)


OPERATOR_NAMESPACES = "t-op-*"  # the `namespace` fixture's prefix for them
"""The session's operator serves only the namespaces of tests that use it; the others (the API
tests, the tests that run a private operator) are left alone."""


@pytest.fixture(scope="session")
def operator(stack: StackHandle, crds: None) -> Iterator[ChartOperator]:
    """The operator as users run it: the chart's Deployment, in a namespace of its own (its
    uninstall deletes it), serving the namespaces of the tests that ask for it. Tests that kill
    or pause an operator run their own OperatorProcess instead."""
    handle = chart_operator.install(stack, namespace="tailor-tests", release="tailor-tests",
                                    serve=[OPERATOR_NAMESPACES])
    yield handle
    (stack.dir / "logs" / "operator-tests.log").write_text(handle.logs())
    handle.uninstall()
