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
win: a case overrides the grid, the grid overrides the base. A part's ``config`` file
is read when the sweep is loaded and stands for its options inside that part, below the
part's own keys, so a case's file overrides the base's keys and the base's file alike.
Relative input paths are relative to the sweep file's folder.
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
from inference_sim.config.options import ALIASES, BY_NAME, PLUGIN_OPTIONS, canonical_name
from inference_sim.core.inputs import load_yaml, read_text
from inference_sim.core.plugins import rebase_plugin_files
from inference_sim.core.rng import MAX_SEED
from inference_sim.core.suggest import unknown_keys
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
    """A sweep: ``base`` < each ``grid`` point < each case (later parts win).

    :func:`parse_sweep` expands the ``config`` files of the base and the cases into
    their options; a grid's ``config`` values (one file per point) are read then too
    and kept in ``config_files``, and expanded point by point in :meth:`runs`. A spec
    built by hand may keep ``config`` anywhere: :meth:`runs` expands it the same way."""

    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    cases: list[dict[str, Any]] = field(default_factory=list)
    path: str = "<sweep>"
    config_files: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    #: Made by ``--seeds``/``--replicates`` (:func:`inference_sim.sweep.run.with_seeds`):
    #: ``replicates.parquet`` follows the table, so a link in its place is kept for it.
    replicates: bool = False

    def _names(self, parts: list[dict[str, Any]]) -> list[str]:
        names: list[str] = []
        for part in parts:
            keys = list(part)
            if part is self.grid:  # the options of the grid's config files, by point
                for path in part.get("config", ()):
                    keys += list(self._config_file(path))
            for k in keys:
                if k not in names and k != "config":
                    names.append(k)
        return names

    def option_names(self) -> list[str]:
        """Every option the sweep names, in first-mention order (base, grid, cases)."""
        return self._names([self.base, self.grid, *self.cases])

    def varied(self) -> list[str]:
        """Options whose value differs between runs (grid keys and case keys)."""
        return self._names([self.grid, *self.cases])

    def _config_file(self, path: Any) -> dict[str, Any]:
        if not path:
            return {}
        key = str(path)
        if key not in self.config_files:
            self.config_files[key] = read_config_file(key, f"{self.path}: config {key}")
        return self.config_files[key]

    def _expanded(self, part: dict[str, Any]) -> dict[str, Any]:
        """``part`` with its ``config`` file's options below its own keys."""
        if "config" not in part:
            return part
        out = {k: v for k, v in part.items() if k != "config"}
        for k, v in self._config_file(part["config"]).items():
            out.setdefault(k, v)
        return out

    def runs(self) -> list[RunSpec]:
        keys = list(self.grid)
        values = [self.grid[k] for k in keys]
        base = self._expanded(self.base)
        cases = [self._expanded(c) for c in self.cases] or [{}]
        out: list[RunSpec] = []
        for point in itertools.product(*values):
            at_point = self._expanded(dict(zip(keys, point, strict=True)))
            for case in cases:
                options = dict(base)
                options.update(at_point)
                options.update(case)
                out.append(RunSpec(len(out), options, run_key(options)))
        return out


def read_config_file(path: str, where: str) -> dict[str, Any]:
    """A run-config file's options (as ``blis run --config`` reads them), each checked
    like a sweep key; ConfigError naming the sweep part and the file."""
    from inference_sim.config.resolve import load_run_config

    try:
        options = load_run_config(path)
    except ConfigError as exc:  # "--config F: why" -> "SWEEP: config F: why"
        text = str(exc)
        text = text.removeprefix(f"--config {path}").lstrip(": ")
        raise ConfigError(f"{where}: {text}") from None
    return _options(options, where)


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
    unknown = [key for key in part if key != "config" and canonical_name(str(key)) is None]
    if unknown:  # all of them, each with its did-you-mean, as --config says them
        names = unknown_keys(unknown, [*BY_NAME, *ALIASES], "run option")
        raise ConfigError(f"{where}: {names}; see `blis run --help`")
    out: dict[str, Any] = {}
    for key, value in part.items():
        name = "config" if key == "config" else canonical_name(str(key))
        assert name is not None  # unknown keys were refused above
        if name in out:
            raise ConfigError(f"{where}: {name} given twice (under two spellings)")
        if name != "config":  # typed like every run option (config/model.py), before any run
            from inference_sim.config.model import check_option_value

            values = value if grid and isinstance(value, list | tuple) else [value]
            for v in values:
                check_option_value(name, v, where)
                if name == "seed":
                    check_seed(v, where)
        out[name] = value
    return out


def check_seed(value: Any, where: str) -> None:
    """ConfigError unless ``value`` is in 0 .. 2**64 - 1: one above would fail its run,
    and a negative one (which ``blis run`` reads as two's complement) would not fit the
    table's unsigned integer column, so a sweep asks for the unsigned equivalent."""
    from inference_sim.config.options import BY_NAME
    from inference_sim.config.resolve import coerce_option

    seed = coerce_option(BY_NAME["seed"], value)
    if not 0 <= seed <= MAX_SEED:
        hint = f"; give its unsigned equivalent {seed + 2**64}" if -(2**63) <= seed < 0 else ""
        raise ConfigError(
            f"{where}: seed must be in [0, {MAX_SEED}] (a 64-bit seed), got {seed}{hint}"
        )


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
    for name in PLUGIN_OPTIONS:  # file.py:Class plug-ins: relative to the sweep file too
        for part in (spec.base, *spec.cases):
            if name in part:
                part[name] = rebase_plugin_files(part[name], folder)
        if name in spec.grid:
            spec.grid[name] = [rebase_plugin_files(v, folder) for v in spec.grid[name]]
    # Each part's config file stands for its options inside that part (below the part's
    # own keys), so that parts merge key by key: base < grid < case.
    spec.base = spec._expanded(spec.base)
    spec.cases = [spec._expanded(c) for c in spec.cases]
    for config_path in spec.grid.get("config", ()):
        spec._config_file(config_path)  # read (and checked) now, expanded per point
    check_outputs(spec)
    _check_rate_axis(spec, path)
    return spec


def _check_rate_axis(spec: SweepSpec, path: str) -> None:
    """A ``rate`` axis over workload-spec runs would run every point at the spec's own
    rate (``blis run`` ignores ``--rate`` with a spec, as the reference does): refuse it
    and name the option that scales a spec."""
    varied = "rate" in spec.grid or any("rate" in c for c in spec.cases)
    if not varied:
        return
    for run in spec.runs():
        if run.options.get("workload_spec") and "rate" in run.options:
            raise ConfigError(
                f"{path}: rate has no effect on runs with a workload_spec (the spec sets "
                "its own rate, as in the reference); vary aggregate_rate to scale the spec"
            )


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
    # Compared as the files they name, across both options: `d.jsonl` and `./d.jsonl`
    # (or a link to it), or one run's export_trace and another's trace_output, used to
    # pass as different paths and one run replaced the other's file.
    first: dict[str, tuple[RunSpec, str, Any]] = {}
    for run in spec.runs():
        mine: dict[str, tuple[str, Any]] = {}
        for name in _OUTPUT_PATHS:
            path = run.options.get(name)
            where = _written_file(path)
            if where is None:
                continue
            if where in mine:  # blis run refuses it too, but only once the run starts
                raise ConfigError(
                    f"{spec.path}: run {run.index} writes {name} {path} and "
                    f"{mine[where][0]} {mine[where][1]} to the same file; give each its own"
                )
            mine[where] = (name, path)
            other, other_name, other_path = first.setdefault(where, (run, name, path))
            if other is not run and other.key != run.key:  # the same options run once
                same = f"{name} {path}"
                if (other_name, other_path) != (name, path):
                    same += f" (the file of run {other.index}'s {other_name} {other_path})"
                raise ConfigError(
                    f"{spec.path}: {same} is written by runs {other.index} and "
                    f"{run.index}, each replacing the other's; give each run its own path "
                    "(in grid or cases) or drop it"
                )


#: Run options that name a file the run writes (results_path is refused outright).
_OUTPUT_PATHS = ("export_trace", "trace_output")


def _written_file(path: Any) -> str | None:
    """The file a run's output option writes, links followed (relative paths against
    the folder the sweep runs in, as the runs write them); None for no path or a device
    or FIFO, which many runs may share (``/dev/null``)."""
    if not path:
        return None
    from inference_sim.core.outfiles import is_special

    text = os.fspath(path) if isinstance(path, str | os.PathLike) else str(path)
    if is_special(text):
        return None
    return os.path.realpath(text)


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
