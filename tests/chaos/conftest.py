"""The chaos suite (issue 16): `make chaos`, or `TAILOR_CHAOS=1 pytest tests/chaos -s`.

Collected only with TAILOR_CHAOS=1, so `make test` leaves it out. It starts a PRIVATE local
stack in a temporary directory (the shared one is never touched: scenarios kill this one's API
server and MinIO) and overrides the `stack` fixture, so tests/conftest.py's `crds` and
`namespace` fixtures work on it. TAILOR_CHAOS_FIGURES names a file the figures are appended to.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tailor_devstack.stack import Stack

from tests.support.testing import StackHandle

if os.environ.get("TAILOR_CHAOS", "") in ("", "0"):
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def stack() -> Iterator[StackHandle]:
    """A private stack for the whole suite, stopped at the end (processes, netns, bridge)."""
    with tempfile.TemporaryDirectory(prefix="tailor-chaos-") as tmp:
        private = Stack(Path(tmp) / "stack")
        try:
            state = private.up(images=("pause", "operator", "trainer"),
                               progress=lambda message: print(message, flush=True))
            yield StackHandle(private, state)
        finally:
            private.down(progress=lambda _message: None)


@pytest.fixture
def storage_secret(stack: StackHandle, namespace: str) -> str:
    """The private MinIO's credentials as the Secret `s3` in the test's namespace."""
    stack.kubectl("create", "secret", "generic", "s3", "-n", namespace,
                  f"--from-literal=AWS_ACCESS_KEY_ID={stack.state.s3_access_key}",
                  f"--from-literal=AWS_SECRET_ACCESS_KEY={stack.state.s3_secret_key}")
    return "s3"


@pytest.fixture
def bucket(stack: StackHandle) -> str:
    """A fresh bucket in the private MinIO (the stack is thrown away at the end)."""
    import boto3

    name = f"chaos-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=stack.state.s3_endpoint, region_name="us-east-1",
                 aws_access_key_id=stack.state.s3_access_key,
                 aws_secret_access_key=stack.state.s3_secret_key).create_bucket(Bucket=name)
    return name
