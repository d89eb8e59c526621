"""The largest functions of each package part, by lines (issue 16's closing note).

Why: the core reshape split ``FastInstance.step`` (about 270 lines) and the cluster's
240-line event loop into short pieces; this prints what is largest now, so a function
growing back is easy to see.

    python scripts/largest_functions.py                  # instance/ and cluster/, top 5
    python scripts/largest_functions.py --top 3 kv latency

Length is ``end_lineno - lineno + 1`` of the ``def`` (decorators excluded, docstring and
comments included), nested functions counted on their own and inside their parent.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "inference_sim"


def _visit(node: ast.AST, prefix: str, found: list[tuple[int, str]]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{child.name}"
            length = (child.end_lineno or child.lineno) - child.lineno + 1
            found.append((length, name))
            _visit(child, f"{name}.", found)
        elif isinstance(child, ast.ClassDef):
            _visit(child, f"{prefix}{child.name}.", found)
        else:
            _visit(child, prefix, found)


def functions(part: str) -> list[tuple[int, str]]:
    """(length in lines, qualified name) of every function and method under ``part``."""
    found: list[tuple[int, str]] = []
    for path in sorted((PACKAGE / part).rglob("*.py")):
        module = path.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".")
        _visit(ast.parse(path.read_text(encoding="utf-8")), f"{module}.", found)
    return sorted(found, key=lambda item: (-item[0], item[1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("parts", nargs="*", default=["instance", "cluster"])
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args(argv)
    for part in args.parts:
        if not (PACKAGE / part).is_dir():
            parser.error(f"no package part {part!r} under {PACKAGE}")
        print(f"{part}/")
        for length, name in functions(part)[: args.top]:
            print(f"  {length:4d}  {name}")


if __name__ == "__main__":
    main()
