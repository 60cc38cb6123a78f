"""The code stays in units a reader can hold: no module over MAX_MODULE_LINES and no function
over MAX_FUNCTION_LINES, unless a `# long: <why>` comment stands right above the function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("operator/tailor", "operator/contract/tailor_contract", "trainer-image/tailor_trainer",
           "devstack/tailor_devstack")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
REASON_MARK = "# long:"

MODULES = sorted(p for root in SOURCES for p in (REPO / root).rglob("*.py"))


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_the_sources_are_found():
    assert len(MODULES) > 40


@pytest.mark.parametrize("path", MODULES, ids=_relative)
def test_module_size(path: Path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{_relative(path)} has {lines} lines"


def long_functions(source: str) -> list[str]:
    """Functions longer than the limit without a `# long:` reason above them."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        assert node.end_lineno is not None
        length = node.end_lineno - node.lineno + 1
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        above = lines[first - 2].strip() if first >= 2 else ""
        if length > MAX_FUNCTION_LINES and not above.startswith(REASON_MARK):
            found.append(f"{node.name} ({length} lines, line {node.lineno})")
    return found


@pytest.mark.parametrize("path", MODULES, ids=_relative)
def test_function_size(path: Path):
    assert long_functions(path.read_text()) == []


def test_a_reason_excuses_a_long_function():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    assert long_functions(f"def f():\n{body}") == [f"f ({MAX_FUNCTION_LINES + 1} lines, line 1)"]
    assert long_functions(f"# long: a table of steps\ndef f():\n{body}") == []
