"""The manifests the API integration tests submit: examples and the invalid corpus.

(tests/unit/api/apischema.py reads the same files for the unit layer; test layers do not import
each other, so the few lines needed here are repeated.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
INVALID = sorted((Path(__file__).parent / "invalid").glob("*.yaml"))


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def expectation(path: Path) -> str:
    """The ``# expect: <substring of the API server's error>`` line."""
    for line in path.read_text().splitlines():
        if line.startswith("# expect:"):
            return line.removeprefix("# expect:").strip()
    raise AssertionError(f"{path.name} has no '# expect:' line")


def crd_schema(kind: str) -> dict[str, Any]:
    plural = {"TrainingJob": "trainingjobs", "DriftMonitor": "driftmonitors"}[kind]
    crd = yaml.safe_load((REPO / "crds" / f"{plural}.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema
