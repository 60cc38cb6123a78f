"""Fixtures of the chart tests: the pinned tools they run (built by `make chart-tools`)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def pins() -> dict[str, str]:
    """hack/versions.sh's variables."""
    out = subprocess.run(["bash", "-c", f'source "{REPO}/hack/versions.sh"; set'],
                         check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines()
                if "=" in line and line.split("=", 1)[0].isupper())


def tool_paths() -> dict[str, Path]:
    """Where hack/build-binaries.sh puts each chart tool (same naming as the script)."""
    p = pins()
    root = Path(p["TAILOR_BIN_ROOT"].strip("'\""))
    source = REPO / "hack" / "kstatus"
    digest = hashlib.sha256(b"".join((source / name).read_bytes()
                                     for name in ("main.go", "go.mod", "go.sum"))).hexdigest()
    return {
        "helm": root / f"helm-{p['HELM_VERSION']}" / "helm",
        "kubeconform": root / f"kubeconform-{p['KUBECONFORM_VERSION']}" / "kubeconform",
        "kstatus": root / f"kstatus-{p['CLI_UTILS_VERSION']}-{digest[:12]}" / "kstatus",
        "monitoring-crds": root / f"prometheus-operator-crds-{p['PROMETHEUS_OPERATOR_VERSION']}",
    }


def _tool(name: str) -> Path:
    path = tool_paths()[name]
    if not path.exists():
        pytest.fail(f"{name} is not built ({path}): run `make chart-tools`")
    return path


@pytest.fixture(scope="session")
def helm() -> Path:
    return _tool("helm")


@pytest.fixture(scope="session")
def kstatus() -> Path:
    return _tool("kstatus")


@pytest.fixture(scope="session")
def lua() -> Path:
    found = shutil.which("lua5.4")
    if not found:
        pytest.fail("lua5.4 is missing: run `make prereqs` (Debian package lua5.4)")
    return Path(found)
