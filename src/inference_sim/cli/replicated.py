"""``blis run --seeds 1,2,3`` / ``--replicates N``: one run per seed, mean and CI per metric.

Kept out of :mod:`inference_sim.cli.main` so the single-run path stays as it is. The runs
are sequential and deterministic (same seeds, same numbers); see
:mod:`inference_sim.replicates` for the statistics and the results-file layout.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from inference_sim.core.logs import each_warning_once

log = logging.getLogger("inference_sim")

REPLICATE_PARAMS = ("seeds", "replicates", "confidence")


def replicate_options() -> list[click.Option]:
    """The ``--seeds``, ``--replicates`` and ``--confidence`` flags (run, sweep, plan)."""
    return [
        click.Option(
            ["--seeds"],
            default=None,
            help="Repeat the run once per seed (comma-separated, e.g. 1,2,3) and report "
            "each metric's mean and confidence interval.",
        ),
        click.Option(
            ["--replicates"],
            type=int,
            default=None,
            help="Repeat the run N times, seeds SEED, SEED+1, ... (like --seeds).",
        ),
        click.Option(
            ["--confidence"],
            type=float,
            default=None,
            help="Confidence of the intervals with --seeds/--replicates [default: 0.95].",
        ),
    ]


#: Per-run outputs that one file or one print cannot hold for several seeds.
_SINGLE_RUN_OUTPUTS = {
    "export_trace": ("--export-trace", "every seed's run would write the file in turn"),
    "trace_output": ("--trace-output", "every seed's run would write the file in turn"),
    "summarize_trace": ("--summarize-trace", "the summary describes one run, not several"),
}


def _refuse_single_run_outputs(
    options: dict[str, Any], raw: dict[str, Any], seeds: str | None
) -> None:
    """Each seed's run would replace the same file (keeping only the last seed's) or the
    output would describe one run of many: refuse instead of losing them silently."""
    from inference_sim.config.errors import ConfigError

    for name, (flag, why) in _SINGLE_RUN_OUTPUTS.items():
        if options.get(name):
            raise ConfigError(
                f"{flag} with --seeds/--replicates: {why}; run one seed with {flag} "
                "(blis run --seed N)"
            )
    if seeds is not None and "seed" in raw:
        raise ConfigError(
            "--seed with --seeds: the runs use the --seeds list; drop --seed (--replicates N "
            "starts at --seed instead)"
        )


@each_warning_once()  # every seed resolves the same options
def run_replicated(
    raw: dict[str, Any],
    *,
    seeds: str | None,
    replicates: int | None,
    confidence: float | None,
    output: str = "text",
) -> None:
    """Resolve ``raw`` once per seed, run, print the aggregate; ConfigError on bad input.

    stdout: ``text`` prints a header line and the metrics as JSON; ``json`` exactly one
    JSON document (``seeds``, ``confidence``, ``metrics``). ``--results-path -`` writes
    the whole document (with each run's summary) to stdout instead."""
    from inference_sim.config.errors import ConfigError
    from inference_sim.config.resolve import resolve
    from inference_sim.metrics.output import check_writable, write_json_atomic
    from inference_sim.replicates import (
        DEFAULT_CONFIDENCE,
        Replicates,
        check_confidence,
        seed_list,
    )
    from inference_sim.runner import run_plan

    conf = check_confidence(DEFAULT_CONFIDENCE if confidence is None else confidence)
    first = resolve(raw)  # checks everything once, and gives the base seed
    for note in first.notes:  # the fidelity line among them, as a single run logs
        log.info(note)
    _refuse_single_run_outputs(first.options, raw, seeds)
    chosen = seed_list(seeds, replicates, int(first.options["seed"]))
    assert chosen is not None
    path = first.options["results_path"]
    if path and path != "-":
        try:
            check_writable(path)
        except OSError as exc:
            raise ConfigError(f"--results-path {path}: cannot write: {exc}") from None
    runs = []
    for seed in chosen:
        plan = resolve({**raw, "seed": seed})
        log.info("replicate seed=%d", seed)
        runs.append(run_plan(plan))
    rep = Replicates(chosen, runs, conf)
    if path == "-":
        sys.stdout.write(json.dumps(rep.to_dict(), indent=2) + "\n")
        sys.stdout.flush()
        return
    if output == "json":
        doc = {k: v for k, v in rep.to_dict().items() if k != "runs"}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(rep.report())
    sys.stdout.flush()
    if path:
        try:
            write_json_atomic(path, rep.to_dict())
        except OSError as exc:
            raise click.ClickException(f"--results-path {path}: {exc}") from None
        log.info("replicates written to %s", path)
