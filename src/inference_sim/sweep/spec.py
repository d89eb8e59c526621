"""The sweep file: a base run, a grid (product) and a list of cases.

::

    base: {model: meta-llama/llama-3.1-8b-instruct, workload: chatbot, num_requests: 500}
    grid: {rate: [10, 20], num_instances: [1, 2]}       # product of these
    cases:                                               # optional, crossed with the grid
      - {routing_policy: least-loaded}
      - {routing_policy: round-robin}

Keys are ``blis run`` flag names without the dashes (either spelling of an aliased
flag; ``config`` names a run-config file). Runs are expanded in a fixed order: the grid
in the order its keys are written, the last key varying fastest, and for each grid
point every case in order. A grid value that is not a list is one value. Later parts
win: a case overrides the grid, the grid overrides the base. Relative input paths are
relative to the sweep file's folder.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from inference_sim.config.errors import ConfigError
from inference_sim.config.options import canonical_name
from inference_sim.core.inputs import load_yaml, read_text
from inference_sim.core.version import __version__

_TOP_KEYS = ("base", "grid", "cases")
_RELATIVE_PATHS = (
    "config",
    "workload_traces_filepath",
    "workload_spec",
    "model_config_folder",
    "hardware_config",
    "defaults_filepath",
    "policy_config",
)


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its position, options (canonical names) and key."""

    index: int
    options: dict[str, Any]
    key: str


@dataclass
class SweepSpec:
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    cases: list[dict[str, Any]] = field(default_factory=list)
    path: str = "<sweep>"

    def option_names(self) -> list[str]:
        """Every option the sweep names, in first-mention order (base, grid, cases)."""
        names: list[str] = []
        for part in (self.base, self.grid, *self.cases):
            for k in part:
                if k not in names:
                    names.append(k)
        return names

    def varied(self) -> list[str]:
        """Options whose value differs between runs (grid keys and case keys)."""
        names: list[str] = []
        for part in (self.grid, *self.cases):
            for k in part:
                if k not in names:
                    names.append(k)
        return names

    def runs(self) -> list[RunSpec]:
        keys = list(self.grid)
        values = [self.grid[k] for k in keys]
        cases = self.cases or [{}]
        out: list[RunSpec] = []
        for point in itertools.product(*values):
            for case in cases:
                options = dict(self.base)
                options.update(zip(keys, point, strict=True))
                options.update(case)
                out.append(RunSpec(len(out), options, run_key(options)))
        return out


def run_key(options: Mapping[str, Any]) -> str:
    """A stable hash of a run's options and the package version (16 hex digits).

    Two runs with the same key give the same results, so a rerun of a sweep reuses them.
    Input files are named by path only: after editing one, rerun with ``--force``.
    """
    doc = {"options": {k: options[k] for k in sorted(options)}, "version": __version__}
    text = json.dumps(doc, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _options(part: Any, where: str, grid: bool = False) -> dict[str, Any]:
    if part is None:
        return {}
    if not isinstance(part, Mapping):
        raise ConfigError(f"{where}: expected a mapping of run options")
    out: dict[str, Any] = {}
    for key, value in part.items():
        name = "config" if key == "config" else canonical_name(str(key))
        if name is None:
            raise ConfigError(f"{where}: unknown run option {key!r} (see `blis run --help`)")
        if name in out:
            raise ConfigError(f"{where}: {name} given twice (under two spellings)")
        if name != "config":  # typed like every run option (config/model.py), before any run
            from inference_sim.config.model import check_option_value

            values = value if grid and isinstance(value, list | tuple) else [value]
            for v in values:
                check_option_value(name, v, where)
        out[name] = value
    return out


def _rebase(value: Any, folder: str) -> Any:
    if isinstance(value, str) and value and not os.path.isabs(value):
        return os.path.join(folder, value)
    return value


def parse_sweep(doc: Any, path: str = "<sweep>", folder: str | None = None) -> SweepSpec:
    """Check a sweep document (as loaded from YAML) and return its :class:`SweepSpec`."""
    folder = folder or os.getcwd()
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(_TOP_KEYS)}")
    unknown = [k for k in doc if k not in _TOP_KEYS]
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(_TOP_KEYS)}")
    spec = SweepSpec(path=path)
    spec.base = _options(doc.get("base"), f"{path}: base")
    grid = _options(doc.get("grid"), f"{path}: grid", grid=True)
    for k, v in grid.items():
        values = list(v) if isinstance(v, list | tuple) else [v]
        if not values:
            raise ConfigError(f"{path}: grid.{k} is an empty list")
        spec.grid[k] = values
    cases = doc.get("cases")
    if cases is not None:
        if not isinstance(cases, list) or not cases:
            raise ConfigError(f"{path}: cases must be a non-empty list of mappings")
        spec.cases = [_options(c, f"{path}: cases[{i}]") for i, c in enumerate(cases)]
    if not spec.base and not spec.grid and not spec.cases:
        raise ConfigError(f"{path}: the sweep has no runs (give base, grid or cases)")
    for part in (spec.base, *spec.cases):
        for name in _RELATIVE_PATHS:
            if name in part:
                part[name] = _rebase(part[name], folder)
    for name in _RELATIVE_PATHS:
        if name in spec.grid:
            spec.grid[name] = [_rebase(v, folder) for v in spec.grid[name]]
    check_outputs(spec)
    return spec


def check_outputs(spec: SweepSpec) -> None:
    """Refuse run outputs a sweep would ignore or that runs would overwrite.

    A sweep keeps each run's results itself, so ``results_path`` was dropped without a
    word; ``export_trace`` / ``trace_output`` shared by several runs were replaced by each
    run in turn, keeping only the last one's.
    """
    for part in (spec.base, spec.grid, *spec.cases):
        if "results_path" in part:
            raise ConfigError(
                f"{spec.path}: results_path has no effect in a sweep, which keeps every "
                "run's results in OUT/runs/<key>.json and the table OUT/results.parquet; "
                "drop it"
            )
    for name in ("export_trace", "trace_output"):
        first: dict[str, RunSpec] = {}
        for run in spec.runs():
            path = run.options.get(name)
            other = first.setdefault(str(path), run) if path else run
            if other is not run and other.key != run.key:  # the same options run once
                raise ConfigError(
                    f"{spec.path}: {name} {path} is written by runs {other.index} and "
                    f"{run.index}, each replacing the other's; give each run its own path "
                    "(in grid or cases) or drop it"
                )


def load_sweep(path: str | os.PathLike[str]) -> SweepSpec:
    """Read a sweep YAML file (ConfigError with the file name on any problem)."""
    p = Path(path)
    try:
        text = read_text(p)
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_sweep(doc, str(p), str(p.resolve().parent))
