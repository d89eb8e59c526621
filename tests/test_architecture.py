"""The layering rules of docs/architecture.md: ``core`` imports nothing else from the
project, and the import-linter contracts in pyproject.toml hold."""

from __future__ import annotations

import ast
import re
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


def test_layout_in_the_doc_names_every_part():
    """docs/architecture.md's tree names every top-level part and module, and every file
    of the parts it lists file by file (core, instance, cluster), so a new part or a new
    file there cannot be left out of the map."""
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    start = doc.index("```\nsrc/inference_sim/")
    tree = doc[start : doc.index("\n```\n", start + 4)]
    missing = [
        p.name + ("/" if p.is_dir() else "")
        for p in PACKAGE.iterdir()
        if not p.name.startswith("__") and (p.is_dir() or p.suffix == ".py")
        if (p.name + "/" if p.is_dir() else p.name) not in tree
    ]
    for part in ("core", "instance", "cluster"):
        missing += [
            f"{part}/{f.name}"
            for f in (PACKAGE / part).glob("*.py")
            if f.name != "__init__.py" and f.name not in tree
        ]
    assert not missing, f"docs/architecture.md's layout does not name {missing}"
    # The layer list in the doc is the contract's, top to bottom.
    contract = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    layers = re.findall(r'^\s+"(inference_sim\.[^"]+)",$', contract, re.M)
    rules = doc[doc.index("## Rules") :]
    listed = rules[rules.index("```\n") + 4 : rules.index("\n```", rules.index("```\n") + 4)]
    assert listed.split("\n") == [layer.replace("inference_sim.", "") for layer in layers]


def test_largest_functions_script_measures_functions():
    """scripts/largest_functions.py (the closing note's figure) finds methods by their
    qualified name and measures them from ``def`` to their last line."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "largest_functions", ROOT / "scripts" / "largest_functions.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    found = mod.functions("instance")
    assert found == sorted(found, key=lambda item: (-item[0], item[1]))
    lengths = dict((name, n) for n, name in found)
    tree = ast.parse((PACKAGE / "instance" / "engine.py").read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Instance")
    schedule = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "schedule")
    assert lengths["instance.engine.Instance.schedule"] == (
        schedule.end_lineno - schedule.lineno + 1
    )
