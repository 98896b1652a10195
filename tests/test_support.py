"""Test modules share helpers through tests/support and conftest fixtures, never by importing one another."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imports_of_test_modules(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found += [name for name in names if name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_")]
    return found


def test_no_test_module_imports_another() -> None:
    modules = sorted(TESTS.rglob("*.py"))
    assert len(modules) > 50 and TESTS / "e2e" / "test_pipeline.py" in modules
    offenders = {str(p.relative_to(TESTS)): imports_of_test_modules(p) for p in modules}
    assert {name: found for name, found in offenders.items() if found} == {}
