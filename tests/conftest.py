"""Fixtures shared by every test layer.

`stack` reuses a running local stack (`make up`) or starts one for the session and stops it at
the end (set TAILOR_KEEP_STACK=1 to keep it). `namespace` gives each test its own namespace.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from tailor_localstack.testing import StackHandle, acquire_stack, eventually, keep_stack

REPO_ROOT = Path(__file__).resolve().parents[1]
STACK_LAYERS = ("integration", "e2e")


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
    name = f"t-{slug}-{secrets.token_hex(2)}"
    stack.kubectl("create", "namespace", name)
    # Pods are refused until the ServiceAccount controller has made the default account.
    eventually(lambda: stack.kubectl("get", "serviceaccount", "default", "-n", name,
                                     check=False).returncode == 0,
               timeout=30, what=f"the default ServiceAccount in {name}")
    yield name
    stack.kubectl("delete", "namespace", name, "--wait=false", check=False)
