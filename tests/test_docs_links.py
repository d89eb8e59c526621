"""README.md and docs/ point to things that exist: files, ``inference_sim`` names and
``[text](page.md#anchor)`` links.

A rename or a move that forgets the docs fails here instead of leaving a reader at a
dead end. Names are checked without importing anything (the source is parsed), so an
optional dependency that is missing cannot make a check skip or fail.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "inference_sim"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# `inference_sim.a.b.Name.attr` anywhere in the text (not a quoted entry-point group
# such as "inference_sim.routing").
DOTTED = re.compile(r"(?<![\w.\"/-])inference_sim(?:\.[A-Za-z_]\w*)+")
# A path to a file of the repository inside backticks or a link: `dir/file.py`.
PATH = re.compile(
    r"(?<![\w./-])((?:[\w-]+/)+[\w.-]+\.(?:py|md|json|yaml|yml|toml|csv|svg))(?![\w/])"
)
# [text](target) with a local target (no scheme).
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"`|\*\*|\*|_(?=\w)|(?<=\w)_", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def _anchors(page: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        m = None if in_code else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return frozenset(out)


@cache
def _module_names(path: Path) -> frozenset[str]:
    """Top-level names of a module, plus ``Class.member`` for class bodies."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()

    def targets(node: ast.AST) -> list[str]:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return [node.name]
        if isinstance(node, ast.Assign):
            return [t.id for t in node.targets if isinstance(t, ast.Name)]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            return [node.target.id]
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            return [(a.asname or a.name).split(".")[0] for a in node.names]
        return []

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.If, ast.Try)):  # TYPE_CHECKING, optional imports
                walk(node.body, prefix)
                walk(getattr(node, "orelse", []), prefix)
                for handler in getattr(node, "handlers", []):
                    walk(handler.body, prefix)
                continue
            for name in targets(node):
                names.add(prefix + name)
            if isinstance(node, ast.ClassDef) and not prefix:
                walk(node.body, node.name + ".")
                for item in ast.walk(node):  # self.x = ... in methods
                    if (
                        isinstance(item, ast.Attribute)
                        and isinstance(item.ctx, ast.Store)
                        and isinstance(item.value, ast.Name)
                        and item.value.id == "self"
                    ):
                        names.add(f"{node.name}.{item.attr}")

    walk(tree.body, "")
    return frozenset(names)


def _dotted_exists(dotted: str) -> bool:
    parts = dotted.split(".")
    # The longest prefix that is a module or a package.
    for cut in range(len(parts), 0, -1):
        base = SRC.joinpath(*parts[:cut])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else None
        if module is None and (base / "__init__.py").is_file():
            module = base / "__init__.py"
        if module is None:
            continue
        rest = parts[cut:]
        if not rest:
            return True
        # Name or Class.member; deeper attribute chains are checked up to the member. The
        # attributes of an object that is not a class (a registry instance) are not.
        names = _module_names(module)
        if rest[0] not in names:
            return rest[0] in _exported(module)  # a lazy name (module __getattr__)
        if len(rest) == 1 or rest[0] not in _classes(module):
            return True
        return ".".join(rest[:2]) in names or rest[1] in _inherited(module, rest[0])
    return False


@cache
def _classes(module: Path) -> frozenset[str]:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    return frozenset(n.name for n in tree.body if isinstance(n, ast.ClassDef))


@cache
def _exported(module: Path) -> frozenset[str]:
    """The strings of a module's ``__all__`` (names it may only build on first use)."""
    for node in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return frozenset(ast.literal_eval(node.value))
    return frozenset()


@cache
def _inherited(module: Path, cls: str) -> frozenset[str]:
    """Members a class gets from a base class defined in the same package (one level)."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for base in node.bases:
                if isinstance(base, ast.Name):
                    for path in PACKAGE.rglob("*.py"):
                        names = _module_names(path)
                        if base.id in names:
                            out |= {
                                n.split(".", 1)[1] for n in names if n.startswith(base.id + ".")
                            }
    return frozenset(out)


# Paths are checked when they start in the repository (or inside the package); others
# are the user's files in examples (`runs/my-run.yaml`, `path/to/file.py`).
REPO_DIRS = {"src", "docs", "tests", "benchmarks", "scripts", "examples", ".ci"}
PARTS = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("_")}


def _path_exists(page: Path, rel: str) -> bool:
    rel = rel.split("#")[0]
    if rel.split("/")[0] not in REPO_DIRS | PARTS | {"inference_sim"}:
        return True
    bases = [page.parent, ROOT, SRC, PACKAGE, ROOT / "tests", ROOT / "benchmarks"]
    return any((base / rel).exists() for base in bases)


def _cases() -> list[tuple[str, str, str]]:
    """(page, kind, target) for every reference in README.md and docs/*.md."""
    out: list[tuple[str, str, str]] = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        name = page.relative_to(ROOT).as_posix()
        for m in DOTTED.finditer(text):
            out.append((name, "name", m.group(0).rstrip(".")))
        for m in PATH.finditer(text):
            out.append((name, "path", m.group(1)))
        prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))
        for m in LINK.finditer(prose):  # links outside code
            target = m.group(1)
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            out.append((name, "link", target))
    return sorted(set(out))


def _broken(page_name: str, kind: str, target: str) -> bool:
    page = ROOT / page_name
    if kind == "name":
        return not _dotted_exists(target)
    if kind == "path":
        return not _path_exists(page, target)
    file_part, _, anchor = target.partition("#")
    dest = (page.parent / file_part).resolve() if file_part else page
    if not dest.exists():
        return True
    if anchor and dest.suffix == ".md":
        return anchor not in _anchors(dest)
    return False


def test_the_checker_finds_what_it_should():
    """The checks can fail: a missing name, file and anchor are reported."""
    assert _dotted_exists("inference_sim.instance.engine.Instance.schedule")
    assert not _dotted_exists("inference_sim.instance.engine.Instance.no_such_method")
    assert not _dotted_exists("inference_sim.no_such_module")
    readme = "README.md"
    assert not _broken(readme, "link", "docs/architecture.md#rules-what-may-import-what")
    assert _broken(readme, "link", "docs/architecture.md#no-such-heading")
    assert _broken(readme, "link", "docs/no-such-page.md")
    assert _broken(readme, "path", "src/inference_sim/instance/no_such.py")
    assert _slug("`blis run` --seeds, *replicates*") == "blis-run---seeds-replicates"


@pytest.mark.parametrize("page,kind,target", _cases())
def test_reference_exists(page: str, kind: str, target: str):
    assert not _broken(page, kind, target), f"{page}: {kind} {target!r} does not exist"
