"""Resource quantities in the node agent go through the Kubernetes client's parser: the
downward API's resourceFieldRef, the /dev/shm size and the memory cgroup's limit."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tailor_devstack.nodeagent import podspec
from tailor_devstack.nodeagent.runtime import ContainerRun, Sandbox

QUANTITIES = [
    ("500m", Decimal("0.5")), ("1000m", Decimal(1)), ("2", Decimal(2)),
    ("1Gi", Decimal(2**30)), ("1.5Gi", Decimal(3 * 2**29)), ("64Mi", Decimal(64 * 2**20)),
    ("4Pi", Decimal(4 * 2**50)), ("128974848", Decimal(128974848)), ("1e3", Decimal(1000)),
    ("1.5k", Decimal(1500)), ("129M", Decimal(129 * 10**6)),
]


@pytest.mark.parametrize(("text", "value"), QUANTITIES)
def test_quantities(text: str, value: Decimal) -> None:
    assert podspec.quantity(text) == value


@pytest.mark.parametrize("text", ["12parsecs", "5ki", "Gi", "", "1.5.3Mi"])
def test_a_bad_quantity_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        podspec.quantity(text)


@pytest.mark.parametrize(("resource", "value", "divisor", "expected"), [
    ("limits.cpu", "1000m", "1", "1"),
    ("limits.cpu", "500m", "1", "1"),  # the kubelet rounds up
    ("limits.cpu", "250m", "1m", "250"),
    ("limits.memory", "1.5Gi", "1Mi", "1536"),
    ("limits.memory", "4Pi", "1Ti", "4096"),
    ("limits.memory", "128974848", "1Mi", "123"),
    ("limits.memory", "128974848", "1", "128974848"),
    ("requests.memory", "1.5Gi", "1Gi", "2"),
])
def test_resource_field_refs_divide_and_round_up(resource: str, value: str, divisor: str,
                                                 expected: str) -> None:
    kind, _, name = resource.partition(".")
    container = {"resources": {kind: {name: value}}}
    assert podspec.resource_field(container, resource, divisor) == expected


def shm_pod(size_limit: str | None, mount_path: str = "/dev/shm") -> dict[str, Any]:
    empty_dir = {"medium": "Memory"} | ({"sizeLimit": size_limit} if size_limit else {})
    return {"spec": {
        "volumes": [{"name": "shm", "emptyDir": empty_dir}],
        "containers": [{"name": "c", "command": ["x"],
                        "volumeMounts": [{"name": "shm", "mountPath": mount_path}]}]}}


@pytest.mark.parametrize(("size_limit", "expected"), [
    ("1.5Gi", 3 * 2**29), ("128974848", 128974848), ("1000m", 1), ("4Pi", 4 * 2**50),
])
def test_shm_size_is_the_size_limit_of_an_empty_dir_mounted_there(size_limit: str,
                                                                  expected: int) -> None:
    assert podspec.shm_size_limit(shm_pod(size_limit)) == expected


def test_shm_keeps_the_default_without_a_size_limit_or_a_mount_there() -> None:
    assert podspec.shm_size_limit(shm_pod(None)) is None
    assert podspec.shm_size_limit(shm_pod("1Gi", mount_path="/scratch")) is None
    assert podspec.shm_size_limit({"spec": {"containers": []}}) is None


@pytest.mark.parametrize(("limit", "written"), [
    ("1.5Gi", "1610612736"), ("4Pi", "4503599627370496"), ("128974848", "128974848"),
    ("1000m", "1"),
])
def test_the_memory_cgroup_gets_the_limit_in_bytes(tmp_path: Path, limit: str,
                                                   written: str) -> None:
    sandbox = Sandbox(uid="u-1", directory=tmp_path / "pod", ip="198.18.0.5", netns_name=None,
                      veth="tv-test")
    container = {"name": "main", "command": ["true"],
                 "resources": {"limits": {"memory": limit}}}
    run = ContainerRun(sandbox, container, restart_count=0, argv=["true"], env={},
                       hostname="pod", keep_paths=[], cgroup_parent=tmp_path / "cgroup")
    assert run.cgroup == tmp_path / "cgroup" / "u-1-main-0"
    assert (run.cgroup / "memory.limit_in_bytes").read_text() == written
