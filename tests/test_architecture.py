"""The layering rules of docs/architecture.md: ``core`` imports nothing else from the
project, and the import-linter contracts in pyproject.toml hold."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "inference_sim"


def _project_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n == "inference_sim" or n.startswith("inference_sim.")}


def test_core_imports_nothing_else_from_the_project():
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(
            n for n in _project_imports(path) if not n.startswith("inference_sim.core")
        )
        for path in (PACKAGE / "core").glob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_top_level_parts_form_no_ring():
    """No two top-level parts import each other, directly or through others."""
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        part = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for name in _project_imports(path):
            bits = name.split(".")
            if len(bits) > 1 and bits[1] != part and part not in ("__init__", "__main__"):
                edges.setdefault(part, set()).add(bits[1])
    # Depth-first search for a cycle.
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*trail, node, nxt]
            if nxt not in state and (ring := visit(nxt, [*trail, node])):
                return ring
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            ring = visit(start, [])
            assert ring is None, " -> ".join(ring)


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter not installed")
def test_import_contracts_hold():
    result = subprocess.run(
        ["lint-imports", "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]
