"""Bounded reading of user input files: size, YAML nesting and alias expansion (issue 21).

Every file ``blis`` reads whole (a workload spec, a policy bundle, a hardware or model
config, a coefficients or defaults file, a run-config or results file) goes through
:func:`read_text`, so ``--workload-spec /dev/zero`` ends with one error after reading
the limit, not when the kernel kills the process. YAML goes through :func:`load_yaml`
(or :func:`compose_yaml`), which also refuses documents nested deeper than
:data:`MAX_YAML_DEPTH` (PyYAML recurses once a level, so a deep document would raise
``RecursionError``) or whose aliases expand past :data:`MAX_YAML_NODES` nodes (a
"billion laughs" document is small on disk and unbounded for every reader that walks
it). JSON goes through :func:`load_json`, which turns excessive nesting into an
ordinary :class:`json.JSONDecodeError`. The errors are the ones the callers already
catch (``OSError``, ``yaml.YAMLError``, ``json.JSONDecodeError``), so each caller keeps
its own one-line message naming the flag and the file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

#: Largest configuration file (spec, bundle, hardware, model, coefficients, defaults,
#: sweep, calibration runs): real ones are a few KB; the bundled catalog is ~60 KB.
MAX_CONFIG_BYTES = 16 * 2**20
#: Largest results file (``blis report``, ``blis plot``, ``--config`` with a results
#: file): about 360 bytes a request, so ~3 million requests.
MAX_RESULTS_BYTES = 2**30
#: Deepest YAML nesting: a workload spec nests 6 levels; PyYAML recurses per level.
MAX_YAML_DEPTH = 100
#: Most YAML nodes once aliases are expanded (every alias counts its whole subtree).
MAX_YAML_NODES = 1_000_000


class InputTooLarge(OSError):
    """A file larger than its limit; ``str()`` is the one-line reason."""

    def __str__(self) -> str:
        return str(self.args[0])


def read_text(path: str | os.PathLike[str], limit: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of ``path``, reading at most ``limit`` + 1 characters.

    Raises :class:`InputTooLarge` (an ``OSError``) for a longer file, and the usual
    ``OSError`` / ``UnicodeDecodeError`` otherwise. Devices and pipes are read the
    same way, so ``/dev/zero`` stops at the limit.
    """
    with open(path, encoding="utf-8") as fh:
        text = fh.read(limit + 1)
    if len(text) > limit:
        raise InputTooLarge(
            f"larger than {limit:,} bytes, the most an input file of this kind may hold "
            "(see docs/troubleshooting.md)"
        )
    return text


class YamlLimitError(yaml.MarkedYAMLError):
    """A YAML document past :data:`MAX_YAML_DEPTH` or :data:`MAX_YAML_NODES`."""


# YAML 1.2 floats: ``1e3`` and ``1e-5`` are numbers (YAML 1.1 needs a dot: ``1.0e+3``).
FLOAT_TAG = "tag:yaml.org,2002:float"
FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)


MERGE_TAG = "tag:yaml.org,2002:merge"


class BoundedLoader(yaml.SafeLoader):
    """A SafeLoader with a nesting bound and YAML 1.2 floats (``1e3`` is a number)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YamlLimitError(
                    problem=f"nested deeper than {MAX_YAML_DEPTH} levels",
                    problem_mark=self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        """A key written twice in one mapping is an error (PyYAML keeps the last one
        silently, so ``rate: 5`` then ``rate: 50`` would run at 50 without a word)."""
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _value in node.value:
                if key_node.tag == MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                    continue  # ``<<`` merges may override on purpose
                value = self.construct_object(key_node, deep=False)
                key = (type(value), value)  # 1 and true are two keys, though 1 == True
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"key {value!r} given twice (first on line {seen[key] + 1})",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


BoundedLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
BoundedLoader.add_implicit_resolver(FLOAT_TAG, FLOAT_RE, list("-+0123456789."))


def check_expansion(root: yaml.Node | None) -> None:
    """:class:`YamlLimitError` if ``root`` expands past :data:`MAX_YAML_NODES` nodes.

    Shared (aliased) subtrees are sized once and counted at every use, so the cost is
    linear in the distinct nodes; an alias that contains itself is refused too.
    """
    if root is None:
        return
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_nodes.discard(key)
            children = _children(node)
            total = 1 + sum(sizes[id(c)] for c in children)
            sizes[key] = total
            if total > MAX_YAML_NODES:
                raise YamlLimitError(
                    problem=f"more than {MAX_YAML_NODES:,} values once its aliases are "
                    "expanded (see docs/troubleshooting.md)",
                    problem_mark=node.start_mark,
                )
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise YamlLimitError(problem="an alias refers to itself", problem_mark=node.start_mark)
        open_nodes.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def compose_yaml(text: str, loader: type[BoundedLoader] = BoundedLoader) -> yaml.Node | None:
    """The node tree of ``text`` (bounded); ``yaml.YAMLError`` on bad or oversized YAML."""
    ld = loader(text)
    try:
        root = ld.get_single_node()
    finally:
        ld.dispose()
    check_expansion(root)
    return root


def load_yaml(text: str, loader: type[BoundedLoader] = BoundedLoader) -> Any:
    """``yaml.safe_load`` with the bounds above (and ``1e3`` read as a number)."""
    ld = loader(text)
    try:
        root = ld.get_single_node()
        if root is None:
            return None
        check_expansion(root)
        return ld.construct_document(root)
    finally:
        ld.dispose()


def load_json(text: str) -> Any:
    """``json.loads``, with too deep a nesting reported as a ``JSONDecodeError``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None


#: How much of a results file's end ``--config`` reads for its config section: the
#: section is a few KB (an inline workload spec at most a config file's size).
RESULTS_TAIL_BYTES = MAX_CONFIG_BYTES


def results_config_tail(path: str | os.PathLike[str], window: int | None = None) -> Any:
    """``{"config": {...}}`` of a JSON results file, read from its last ``window`` bytes
    (default :data:`RESULTS_TAIL_BYTES`).

    A results file ends with its ``config`` section (``blis run --results-path`` and
    ``Results.write_json`` put it last), so ``--config r.json`` needs only its end, not
    the per-request records before it: reading and parsing a 1 GiB results file whole
    costs gigabytes and minutes for a few kilobytes of options. Returns None when
    ``path`` is not a regular file starting with ``{`` or has no such ending section
    (a run-config YAML, a results file whose keys were reordered); the caller then
    reads it whole, within its size limit.
    """
    import stat

    window = RESULTS_TAIL_BYTES if window is None else window
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    with open(path, "rb") as fh:
        if not fh.read(64).lstrip().startswith(b"{"):
            return None
        fh.seek(max(0, info.st_size - window))
        tail = fh.read(window)
    pos = len(tail)
    # The last top-level key: the last '"config"' from which the rest parses as one
    # object's final member (an inner '"config"' leaves unbalanced braces behind it).
    while (pos := tail.rfind(b'"config"', 0, pos)) >= 0:
        try:
            doc = json.loads(b"{" + tail[pos:])
        except (ValueError, RecursionError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("config"), dict):
            return doc
    return None


def is_replicates_document(doc: Mapping[str, Any]) -> bool:
    """The document ``blis run --seeds/--replicates --results-path`` writes: the mean over
    several runs, each run's summary (with its config) under ``runs``."""
    return {"seeds", "metrics", "runs"} <= set(doc) and isinstance(doc.get("runs"), list)
