"""Run a sweep: skip finished runs, run the rest on a backend, write the table.

Layout of the output folder::

    DIR/runs/<key>.json     one finished run (summary, resolved config), kept for reruns
    DIR/results.parquet     one row per run, in sweep order
    DIR/results.duckdb      the same rows as table ``runs``

Each file is written under a temporary name and renamed, so an interrupted sweep never
leaves half a file; rerunning it runs only what is missing (and what failed). The tables
go through :func:`inference_sim.core.outfiles.output_path`, as every output of the
project: a symbolic link the user put in their place is followed (its target gets the
table, the link stays) and a device or FIFO is written through, never replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference_sim.config.errors import ConfigError
from inference_sim.config.options import BY_NAME
from inference_sim.core.extras import require
from inference_sim.core.outfiles import is_special, output_path
from inference_sim.metrics.output import write_json_atomic
from inference_sim.sweep.backends import Backend, LocalBackend, execute_run
from inference_sim.sweep.spec import RunSpec, SweepSpec, check_outputs, check_seed, run_key

#: The means over seeds of a ``--seeds``/``--replicates`` sweep (:func:`write_replicates`).
REPLICATES_FILE = "replicates.parquet"

#: Resolved settings every row carries (besides the options the sweep names).
DEPLOYMENT_COLUMNS = (
    "model",
    "hardware",
    "tp",
    "latency_model",  # resolved: which model ran (auto may fall back; see the summary's reason)
    "num_instances",
    "workload",
    "rate",
    "num_requests",
    "routing_policy",
    "seed",
)


@dataclass
class SweepOutcome:
    """What a sweep did: one result per run (sweep order) and the table written."""

    runs: list[RunSpec]
    results: list[dict[str, Any]]
    reused: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def failed(self) -> list[tuple[RunSpec, dict[str, Any]]]:
        return [(r, res) for r, res in zip(self.runs, self.results, strict=True) if not _ok(res)]


def _ok(res: dict[str, Any] | None) -> bool:
    return bool(res) and res.get("status") == "ok"


def _load_finished(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if _ok(doc) else None


def check_table_extras() -> None:
    """Raise MissingExtra now (before running anything) if the table cannot be written."""
    require("pandas", "sweep", "blis sweep")
    require("pyarrow", "sweep", "blis sweep")
    require("duckdb", "sweep", "blis sweep")


def run_sweep(
    spec: SweepSpec,
    out_dir: str | os.PathLike[str],
    *,
    backend: Backend | None = None,
    force: bool = False,
    on_result: Callable[[RunSpec, dict[str, Any], bool], None] | None = None,
    write_table: bool = True,
) -> SweepOutcome:
    """Run every run of ``spec`` not already finished in ``out_dir``; write the table.

    ``on_result(run, result, reused)`` is called as each run finishes (or is reused).
    """
    runs = spec.runs()
    if write_table:
        check_table_extras()
    out = Path(out_dir)
    _make_folder(out / "runs")
    results: list[dict[str, Any] | None] = [None] * len(runs)
    todo: list[RunSpec] = []
    reused = 0
    first_of_key: dict[str, int] = {}
    for run in runs:
        if run.key in first_of_key:  # the same options twice: run once
            continue
        first_of_key[run.key] = run.index
        done = None if force else _load_finished(out / "runs" / f"{run.key}.json")
        if done is not None:
            results[run.index] = done
            reused += 1
            if on_result is not None:
                on_result(run, done, True)
        else:
            todo.append(run)

    def record(i: int, result: dict[str, Any]) -> None:
        run = todo[i]
        result = dict(result)
        result["key"] = run.key
        result["options"] = run.options
        if _ok(result):
            write_json_atomic(out / "runs" / f"{run.key}.json", result)
        else:
            with contextlib.suppress(FileNotFoundError):
                (out / "runs" / f"{run.key}.json").unlink()
        results[run.index] = result
        if on_result is not None:
            on_result(run, result, False)

    backend = backend or LocalBackend()
    if todo:
        backend.map(execute_run, [r.options for r in todo], record)
    for run in runs:  # duplicates share their first run's result
        if results[run.index] is None:
            results[run.index] = results[first_of_key[run.key]]
    final = [r if r is not None else {"status": "failed", "error": "not run"} for r in results]
    outcome = SweepOutcome(runs, final, reused)
    outcome.rows = table_rows(spec, runs, final)
    if write_table:
        outcome.files = write_tables(outcome.rows, out)
        # An earlier --seeds run's means describe runs this table may no longer hold;
        # a sweep with seeds writes a new one (write_replicates) after this.
        remove_replicates(out, keep_link=spec.replicates)
    return outcome


def remove_replicates(out: Path, *, keep_link: bool = False) -> None:
    """Remove ``out/replicates.parquet``, the means of an earlier ``--seeds`` sweep.

    Only ever the folder's entry, never what a link names: a sweep without seeds
    removes a symbolic link there (the stale means leave the folder; the file it named,
    elsewhere and perhaps shared, is not touched, and a later sweep with seeds writes a
    regular file), while one with seeds (``keep_link``) keeps the link, which its means
    are written through next. A device or FIFO holds no stale table and is the user's:
    it stays, as every output leaves one in place."""
    path = out / REPLICATES_FILE
    if is_special(path) or (keep_link and path.is_symlink()):
        return
    path.unlink(missing_ok=True)  # a link itself, not what it points to


def _make_folder(path: Path) -> None:
    """``mkdir -p path``; ConfigError naming the part that is missing or in the way.

    A folder that is a symbolic link to a missing folder used to end the sweep with
    "FileExistsError: [Errno 17] File exists" (exit 1), after the --out check passed
    (it made sense of the link only as a missing folder to create)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError, FileNotFoundError) as exc:
        for part in (path, *path.parents):
            if part.is_symlink() and not part.exists():
                raise ConfigError(
                    f"{path.parent}: cannot make the folder: {part} is a symbolic link to "
                    f"{os.readlink(part)}, which does not exist"
                ) from None
            if part.exists() and not part.is_dir():
                raise ConfigError(
                    f"{path.parent}: cannot make the folder: {part} is a file, not a folder"
                ) from None
        raise ConfigError(f"{path.parent}: cannot make the folder: {exc.strerror or exc}") from None


# --- the table ---------------------------------------------------------------------------


def _coerced(name: str, value: Any) -> Any:
    from inference_sim.config.resolve import _coerce

    spec = BY_NAME.get(name)
    if spec is None:
        return value
    try:
        return _coerce(spec, value)
    except ConfigError:
        return value


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True)
    return value


def table_rows(
    spec: SweepSpec, runs: Sequence[RunSpec], results: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One flat row per run: identity, config columns, then summary metrics.

    Config columns are the options the sweep names plus :data:`DEPLOYMENT_COLUMNS`
    (resolved values for finished runs). A summary key that clashes with a config
    column is prefixed ``summary_``. Lists and mappings are JSON text.
    """
    config_names = [*spec.option_names()]
    config_names += [n for n in DEPLOYMENT_COLUMNS if n not in config_names]
    rows: list[dict[str, Any]] = []
    for run, res in zip(runs, results, strict=True):
        row: dict[str, Any] = {
            "run": run.index,
            "run_key": run.key,
            "status": res.get("status", "failed"),
            "error": res.get("error", "") if not _ok(res) else "",
        }
        summary = res.get("summary") or {}
        resolved = summary.get("config") or {}
        for name in config_names:
            if name in resolved:
                value = resolved[name]
            elif name in run.options:
                value = _coerced(name, run.options[name])
            else:
                value = None
            row[name] = _cell(value)
        for key, value in summary.items():
            if key == "config":
                continue
            col = f"summary_{key}" if key in row else key
            row[col] = _cell(value)
        row["config_json"] = json.dumps(resolved, sort_keys=True) if resolved else ""
        rows.append(row)
    return rows


def frame(rows: list[dict[str, Any]]) -> Any:
    """The rows as a DataFrame with one type per column (mixed columns become text)."""
    pd = require("pandas", "sweep", "the sweep table")
    columns: list[str] = []
    for row in rows:
        for k in row:
            if k not in columns:
                columns.append(k)
    data: dict[str, list[Any]] = {c: [row.get(c) for row in rows] for c in columns}
    for c, values in data.items():
        kinds = {type(v) for v in values if v is not None}
        if kinds <= {int, float} and float in kinds:
            data[c] = [float(v) if v is not None else None for v in values]
        elif (len(kinds) > 1 and not kinds <= {int, bool}) or (
            int in kinds and not _fits_integer_column(values)
        ):
            data[c] = [str(v) if v is not None else None for v in values]
    df = pd.DataFrame(data, columns=columns)
    for c in df.columns:
        if df[c].dtype == object and all(isinstance(v, str) or v is None for v in df[c]):
            df[c] = df[c].astype("string")
    return df


def _fits_integer_column(values: Sequence[Any]) -> bool:
    """Whether the integers fit one Parquet integer column (int64, or uint64 when none is
    negative): a failed run's option may hold any integer, and one too large for both
    would lose the whole table (OverflowError); such a column is written as text."""
    ints = [v for v in values if isinstance(v, int)]
    low, high = min(ints), max(ints)
    if low < 0:
        return low >= -(2**63) and high < 2**63
    return high < 2**64


def write_tables(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Write ``results.parquet`` and ``results.duckdb`` (table ``runs``) atomically."""
    duckdb = require("duckdb", "sweep", "blis sweep")
    df = frame(rows)
    parquet = out / "results.parquet"
    with output_path(parquet) as tmp:  # absent or complete; no temporary file left
        df.to_parquet(tmp, index=False)
    db = out / "results.duckdb"
    # As results.parquet: a link followed, a device or FIFO written through (the renamed
    # temporary database used to replace a symlinked results.duckdb with a file).
    with output_path(db) as tmp:
        os.unlink(tmp)  # duckdb refuses the empty file reserving the name: it makes its own
        try:
            con = duckdb.connect(tmp)
            try:
                con.register("sweep_frame", df)
                con.execute("CREATE TABLE runs AS SELECT * FROM sweep_frame")
                con.unregister("sweep_frame")
                con.execute("CHECKPOINT")
            finally:
                con.close()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(f"{tmp}.wal")  # none after the checkpoint; one if it failed
    return [parquet, db]


def format_table(outcome: SweepOutcome, spec: SweepSpec) -> str:
    """A short text table of the runs: varied options, status, headline metrics."""
    varied = spec.varied()
    metrics = ("ttft_p99_ms", "e2e_p99_ms", "itl_mean_ms", "responses_per_sec")
    header = ["run", *varied, "status", "latency model", *metrics]
    lines = [header]
    for run, res in zip(outcome.runs, outcome.results, strict=True):
        s = res.get("summary") or {}
        cells = [str(run.index)]
        cells += [str(run.options.get(v, "")) for v in varied]
        cells.append(res.get("status", "failed"))
        cells.append(str(s.get("latency_model") or "-"))
        for m in metrics:
            v = s.get(m)
            cells.append(f"{v:.1f}" if isinstance(v, int | float) else "-")
        lines.append(cells)
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines
    )
    return text + "\n"


# --- replicates (--seeds / --replicates) ------------------------------------------------------

REPLICATE_METRICS = ("ttft_p99_ms", "e2e_p99_ms", "itl_mean_ms", "responses_per_sec")


def with_seeds(spec: SweepSpec, seeds: Sequence[int]) -> SweepSpec:
    """``spec`` with ``seed`` as its innermost grid dimension (ConfigError if it varies)."""
    if "seed" in spec.varied():
        raise ConfigError(
            f"{spec.path}: the sweep already varies seed; drop --seeds/--replicates or the "
            "seed key of its grid or cases"
        )
    for seed in seeds:  # --replicates counts up from the base's seed: past 2**64 - 1 too
        check_seed(seed, f"{spec.path}: --seeds/--replicates")
    grid = {k: v for k, v in spec.grid.items() if k != "seed"}
    grid["seed"] = list(seeds)
    base = {k: v for k, v in spec.base.items() if k != "seed"}
    seeded = SweepSpec(
        base=base,
        grid=grid,
        cases=spec.cases,
        path=spec.path,
        config_files=spec.config_files,
        replicates=True,
    )
    check_outputs(seeded)  # a trace path every seed would write is refused, as without
    return seeded


def replicate_rows(
    spec: SweepSpec, outcome: SweepOutcome, confidence: float
) -> list[dict[str, Any]]:
    """One row per sweep point (every option but the seed): the varied options, ``n``
    (finished runs), ``seeds``, and each numeric metric's ``_mean``, ``_ci_low`` and
    ``_ci_high`` over the seeds (two-sided Student t, :mod:`inference_sim.replicates`)."""
    from inference_sim.replicates import aggregate

    varied = [v for v in spec.varied() if v != "seed"]
    groups: dict[str, list[int]] = {}
    seen: set[str] = set()
    for i, run in enumerate(outcome.runs):
        if run.key in seen:  # the same point written twice (two equal cases): one run
            continue
        seen.add(run.key)
        point = {k: v for k, v in run.options.items() if k != "seed"}
        groups.setdefault(run_key(point), []).append(i)
    rows: list[dict[str, Any]] = []
    for point, members in enumerate(groups.values()):
        first = outcome.runs[members[0]]
        row: dict[str, Any] = {"point": point}
        ok = [outcome.results[i] for i in members if _ok(outcome.results[i])]
        # The first finished run's resolved values, as table_rows writes them: the raw
        # option (None where a config file sets the value) could not be joined with
        # results.parquet.
        resolved = (ok[0].get("summary") or {}).get("config") or {} if ok else {}
        for name in varied:
            value = resolved[name] if name in resolved else _coerced(name, first.options.get(name))
            row[name] = _cell(value)
        row["n"] = len(ok)
        row["seeds"] = json.dumps([outcome.runs[i].options.get("seed") for i in members])
        if ok:
            for metric, stats in aggregate([r["summary"] for r in ok], confidence).items():
                row[f"{metric}_mean"] = stats["mean"]
                row[f"{metric}_ci_low"] = stats["ci_low"]
                row[f"{metric}_ci_high"] = stats["ci_high"]
        rows.append(row)
    return rows


def write_replicates(rows: list[dict[str, Any]], out: Path) -> Path:
    """``replicates.parquet``, as the tables (:func:`output_path`: atomically, a link
    followed, a device or FIFO written through)."""
    df = frame(rows)
    target = out / REPLICATES_FILE
    with output_path(target) as tmp:
        df.to_parquet(tmp, index=False)
    return target


def format_replicates(rows: list[dict[str, Any]], spec: SweepSpec, confidence: float) -> str:
    """Text table: varied options, n, and ``mean ± half-width`` of the headline metrics."""
    varied = [v for v in spec.varied() if v != "seed"]
    header = ["point", *varied, "n", *REPLICATE_METRICS]
    lines = [header]
    for row in rows:
        cells = [str(row["point"]), *(str(row.get(v, "")) for v in varied), str(row["n"])]
        for m in REPLICATE_METRICS:
            mean, lo, hi = (row.get(f"{m}_{x}") for x in ("mean", "ci_low", "ci_high"))
            if mean is None:
                cells.append("-")
            elif lo is None or hi is None:
                cells.append(f"{mean:.1f}")
            else:
                cells.append(f"{mean:.1f} ± {(hi - lo) / 2:.1f}")
        lines.append(cells)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    text = "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in lines
    )
    return f"means over seeds, ± half the {confidence:.0%} confidence interval:\n{text}\n"
