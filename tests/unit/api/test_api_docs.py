"""docs/api.md is generated from the CRDs and must be current."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from apischema import REPO, root_schema, walk


def _generator() -> ModuleType:
    path = REPO / "hack" / "gen_api_docs.py"
    spec = importlib.util.spec_from_file_location("gen_api_docs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_api_docs", module)
    spec.loader.exec_module(module)
    return module


def test_api_docs_are_up_to_date() -> None:
    generated = _generator().render()
    on_disk = (REPO / "docs" / "api.md").read_text()
    assert on_disk == generated, "docs/api.md is stale: run python hack/gen_api_docs.py"


def test_check_mode_passes_on_the_current_docs() -> None:
    assert _generator().main(["--check"]) == 0


def test_check_mode_fails_on_stale_docs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    generator = _generator()
    stale = tmp_path / "api.md"
    stale.write_text(generator.render().replace("immutable", "mutable", 1))
    monkeypatch.setattr(generator, "OUTPUT", stale)
    monkeypatch.setattr(generator, "REPO", tmp_path.parent)
    assert generator.main(["--check"]) == 1
    assert "api.md" in capsys.readouterr().out


def _rows(section: str) -> list[str]:
    return re.findall(r"^\| `((?:spec|status)[^`]*)` \|", section, flags=re.MULTILINE)


def test_every_field_is_documented_exactly_once() -> None:
    docs = (REPO / "docs" / "api.md").read_text()
    sections = {
        "TrainingJob": docs.split("\n## TrainingJob\n")[1].split("\n## DriftMonitor\n")[0],
        "DriftMonitor": docs.split("\n## DriftMonitor\n")[1],
    }
    for kind, section in sections.items():
        documented = _rows(section)
        assert len(documented) == len(set(documented)), f"{kind}: a field is documented twice"
        expected = []
        schema = root_schema(kind)
        for top in ("spec", "status"):
            for path, node in walk(schema["properties"][top], top):
                if path == top or "retrain.template.spec." in path:
                    continue  # the template's fields are documented once, under TrainingJob
                if path.endswith(("[]", "{}")) and node.get("type") != "object":
                    continue  # scalar items are described with their list or map
                expected.append(path)
        assert documented == expected
