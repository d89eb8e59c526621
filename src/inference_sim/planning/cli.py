"""``blis plan`` (capacity planning) and ``blis tune`` (policy tuning); see docs/planning.md."""

from __future__ import annotations

import itertools
import json
import logging
import math
import sys
from typing import Any

import click

from inference_sim.core.logs import each_warning_once
from inference_sim.report.cliutil import (
    base_from_config,
    check_output,
    cli_errors,
    collect_run_options,
    echo_err,
    parse_assignments,
    run_options,
)

log = logging.getLogger("inference_sim")

_PLAN_OWN = (
    "model",
    "hardware",
    "tp",
    "num_instances",
    "rate",
    "results_path",
    "export_trace",
    "slo",  # plan's own --slo (the same spelling); latency bounds also give runs goodput
    "prefill_tp",  # searched per pool for --pd-ratio candidates (repeatable here)
    "decode_tp",
)
_TUNE_OWN = (
    "routing_policy",
    "routing_scorers",
    "results_path",
    "export_trace",
    "fitness_weights",  # tune has its own --fitness-weights (planning.fitness)
    "slo",
)


def _backend_options(f: Any) -> Any:
    f = click.option("--address", default=None, help="Ray cluster address (with --backend ray).")(f)
    f = click.option(
        "--backend",
        type=click.Choice(["local", "ray"]),
        default="local",
        show_default=True,
        help="Where runs execute: local processes or Ray (needs the `ray` extra).",
    )(f)
    f = click.option(
        "--jobs", "-j", type=int, default=None, help="Runs at once (default: the CPU count)."
    )(f)
    return f


def _split(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for text in values for v in text.split(",") if v.strip()]


def _deployments(models: list[str], hardware: list[str], tps: list[int], candidates: list[str]):  # type: ignore[no-untyped-def]
    from inference_sim.config.errors import ConfigError
    from inference_sim.planning.plan import Deployment

    out: list[Deployment] = []
    for text in candidates:
        parts = text.rsplit(":", 2)
        if len(parts) == 2 and len(models) == 1:
            model, gpu, tp = models[0], parts[0], parts[1]
        elif len(parts) == 3:
            model, gpu, tp = parts
        else:
            raise ConfigError(
                f"--candidate {text!r}: expected MODEL:GPU:TP (or GPU:TP with one --model)"
            )
        try:
            out.append(Deployment(model.strip().lower(), gpu.strip(), int(tp)))
        except ValueError:
            raise ConfigError(f"--candidate {text!r}: TP must be an integer") from None
    if not candidates:
        if not models:
            raise ConfigError("--model is required (or --candidate MODEL:GPU:TP)")
        for m, h, t in itertools.product(models, hardware or [""], tps or [0]):
            out.append(Deployment(m.strip().lower(), h, t))
    return out


def _pool_tps(flag: str, values: tuple[str, ...]) -> list[int]:
    """``--prefill-tp 1,2`` / ``--prefill-tp 1 --prefill-tp 2``: TPs >= 1, deduplicated."""
    from inference_sim.config.errors import ConfigError

    out: list[int] = []
    for text in _split(values):
        try:
            tp = int(text)
        except ValueError:
            tp = 0
        if tp < 1:
            raise ConfigError(f"{flag} {text!r}: expected an integer TP >= 1, e.g. 1,2,4")
        if tp not in out:
            out.append(tp)
    return out


def _with_pd_ratios(
    deployments: list[Any],
    ratios: list[str],
    prefill_tps: list[int] | None = None,
    decode_tps: list[int] | None = None,
) -> list[Any]:
    """Each deployment colocated and at every ``--pd-ratio P:D`` x ``--prefill-tp`` x
    ``--decode-tp`` (docs/planning.md#disaggregated-candidates---pd-ratio)."""
    import dataclasses

    from inference_sim.config.errors import ConfigError

    if (prefill_tps or decode_tps) and not ratios:
        flag = "--prefill-tp" if prefill_tps else "--decode-tp"
        raise ConfigError(f"{flag} sets a pool's TP of disaggregated candidates: give --pd-ratio")

    parsed: list[tuple[int, int]] = []
    for text in ratios:
        parts = text.split(":")
        try:
            a, b = (int(x) for x in parts)
        except ValueError:
            a = b = 0
        if len(parts) != 2 or a < 1 or b < 1:
            raise ConfigError(f"--pd-ratio {text!r}: expected P:D with integers >= 1, e.g. 1:3")
        parsed.append((a, b))
    out = list(deployments)
    for dep in deployments:
        for r in parsed:
            for ptp in prefill_tps or [0]:
                for dtp in decode_tps or [0]:
                    cand = dataclasses.replace(dep, pd_ratio=r, prefill_tp=ptp, decode_tp=dtp)
                    # with both pool TPs given the run's --tp plays no part in a split
                    # (no dual-role instances): one candidate per GPU, not one per --tp
                    same = [c for c in out if ptp and dtp and c.pd_ratio == r]
                    if any((c.model, c.hardware, c.prefill_tp, c.decode_tp)
                           == (dep.model, dep.hardware, ptp, dtp) for c in same):  # fmt: skip
                        continue
                    out.append(cand)
    return out


#: What ``blis plan`` sets itself instead of a ``--set`` of these run options.
_OWN_HINTS = {
    "model": "give --model",
    "hardware": "give --hardware",
    "tp": "give --tp",
    "num_instances": "it searches the instance count (--max-instances bounds it)",
    "rate": "give --rate",
    "results_path": "it writes no results file (--json prints the plan)",
    "export_trace": "it writes no trace (export one with blis run --export-trace)",
    "slo": "give --slo",
    "prefill_tp": "give --prefill-tp (repeatable)",
    "decode_tp": "give --decode-tp (repeatable)",
}


def _refuse_own(assigned: dict[str, Any]) -> None:
    """``--set`` of an option plan sets itself was dropped without a word: refuse it."""
    from inference_sim.config.errors import ConfigError

    for name in assigned:
        if name in _OWN_HINTS:
            raise ConfigError(f"--set {name}: blis plan ignores it; {_OWN_HINTS[name]}")
    if assigned.get("trace_output"):
        raise ConfigError(
            "--set trace_output: every probe run would replace the same file; trace one "
            "run with blis run --trace-level decisions --trace-output"
        )


def _warn_config_dropped(base: dict[str, Any]) -> None:
    """A ``--config`` file's options that plan sets itself are dropped (``--set`` of them
    is refused): say so for each one that would have changed the run."""
    from inference_sim.config.options import BY_NAME

    for name, hint in _OWN_HINTS.items():
        if name in ("model", "hardware", "tp") or name not in base:
            continue  # the deployment a config names is planned (see _plan)
        if base[name] not in (None, "", BY_NAME[name].default):
            log.warning("--config: %s %s is not used by blis plan; %s", name, base[name], hint)
    if base.get("trace_output"):
        log.warning(
            "--config: trace_output %s is not used by blis plan (every probe would replace "
            "it); trace one run with blis run",
            base["trace_output"],
        )


#: Simulated seconds of arrivals at the target rate below which a probe's queue has
#: little time to build (docs/planning.md: 100 requests at 60/s gave a saturation rate of
#: 157.5 req/s, 1 000 requests 86.2).
SHORT_PROBE_S = 10.0


def _warn_short_probe(base: dict[str, Any], rate: float) -> None:
    """A distribution or preset workload whose probes offer only a few seconds of
    traffic at the target rate: queues barely form and the plan reads optimistic."""
    if base.get("workload_spec") or base.get("workload") == "traces":
        return  # the spec or trace sets its own length
    from inference_sim.config.options import BY_NAME

    given = base.get("num_requests")
    n = int(BY_NAME["num_requests"].default if given in (None, "") else given)
    if n <= 0 or not rate or rate <= 0 or n / rate >= SHORT_PROBE_S:
        return
    log.warning(
        "--num-requests %d at --rate %g is %.1f s of arrivals per probe: too short for "
        "queues to build, so the instance counts and saturation rate read optimistic; "
        "give --num-requests %d or more (%g s; docs/planning.md)",
        n,
        rate,
        n / rate,
        math.ceil(SHORT_PROBE_S * rate),
        SHORT_PROBE_S,
    )


def _warn_rate_set(base: dict[str, Any]) -> None:
    """Plan scales a workload spec to each probed rate (``aggregate_rate``): a given
    ``--aggregate-rate`` was dropped without a word, so the plan seemed to be for it."""
    given = base.get("aggregate_rate")
    if base.get("workload_spec") and given not in (None, "", 0, 0.0):
        log.warning(
            "--aggregate-rate %s is not used by blis plan, which scales the workload spec "
            "to each probed rate; give --rate",
            f"{given:g}" if isinstance(given, int | float) else given,
        )


#: Why ``blis tune`` cannot honour a ``--set`` of these run options.
_TUNE_HINTS = {
    "results_path": "no effect with blis tune, which writes no results file (--json prints "
    "the trials, --output writes the bundle)",
    "export_trace": "every trial of blis tune would replace the same file; export one "
    "run's trace with blis run --export-trace",
    "trace_output": "every trial of blis tune would replace the same file; trace one run "
    "with blis run --trace-level decisions --trace-output",
}


def _refuse_tune_own(assigned: dict[str, Any]) -> None:
    """``--set results_path`` was dropped by tune's runs and ``--set export_trace`` /
    ``trace_output`` rewritten by every trial, as in a sweep (sweep/spec.py): refuse them."""
    from inference_sim.config.errors import ConfigError

    for name, value in assigned.items():
        if name in _TUNE_HINTS and value:
            raise ConfigError(f"--set {name}={value}: {_TUNE_HINTS[name]}")


def _refuse_input_overwrite(
    outputs: list[tuple[str, str]], options: dict[str, Any], config: str | None
) -> None:
    """ValueError (exit 2) when an output would replace a file the runs read (the
    workload spec, a trace, a --policy-config bundle, the --config file, ...) or another
    output: ``--plot spp.yaml`` used to turn the workload spec into a PNG. The rules and
    the message are ``blis run``'s (:func:`inference_sim.core.outfiles.refuse_overlaps`)."""
    from inference_sim.config.outputs import run_inputs
    from inference_sim.core.outfiles import OutputPathError, refuse_overlaps

    try:
        refuse_overlaps(outputs, run_inputs(options, config))
    except OutputPathError as exc:
        raise ValueError(str(exc)) from None


@each_warning_once()
def _plan(**p: Any) -> None:
    from inference_sim.config.errors import ConfigError
    from inference_sim.config.unused import accept_reference_flags
    from inference_sim.planning.plan import (
        check_plan_arguments,
        format_plan,
        parse_prices,
        plan_capacity,
    )
    from inference_sim.planning.slo import parse_slos
    from inference_sim.sweep.backends import make_backend

    debug, quiet = p.pop("debug"), p.pop("quiet")
    with cli_errors(debug):
        base = base_from_config(accept_reference_flags(collect_run_options(p, _PLAN_OWN)))
        assigned = parse_assignments(p["assignments"])
        _refuse_own(assigned)
        base.update(assigned)
        # The deployment a --config file names is planned when no flag names one (it
        # used to be dropped: the catalog's default GPU and TP were planned instead).
        models = list(p["models"]) or ([str(base["model"])] if base.get("model") else [])
        hardware = _split(p["hardware"]) or (
            [str(base["hardware"])] if base.get("hardware") else []
        )
        tps = list(p["tps"]) or ([int(base["tp"])] if base.get("tp") else [])
        given = dict(base)  # as given, for the warnings once the input is checked
        for name in _PLAN_OWN:
            base.pop(name, None)
        base.pop("trace_output", None)
        deployments = _deployments(models, hardware, tps, list(p["candidates"]))
        deployments = _with_pd_ratios(
            deployments,
            list(p["pd_ratios"]),
            _pool_tps("--prefill-tp", p["prefill_tps"]),
            _pool_tps("--decode-tp", p["decode_tps"]),
        )
        objectives = parse_slos(p["slos"])
        from inference_sim.metrics.goodput import family

        # Latency bounds also give every run's summary goodput (as `blis run --slo`).
        goodput_slos = [s for s, o in zip(p["slos"], objectives, strict=True) if family(o)]
        if goodput_slos:
            base["slo"] = ",".join(goodput_slos)
        prices = parse_prices(p["prices"])
        if p["jobs"] is not None and p["jobs"] < 1:
            raise ValueError(f"--jobs must be >= 1, got {p['jobs']}")
        if p["plot"]:
            from inference_sim.core.extras import require

            require("matplotlib", "plot", "blis plan --plot")
            check_output("--plot", p["plot"])  # before the search, not after it
            _refuse_input_overwrite([("--plot", p["plot"])], base, p["config"])
        from inference_sim.replicates import seed_list

        seeds = seed_list(p["seeds"], p["replicates"], int(base.get("seed", 42)))
        check_plan_arguments(
            rate=p["rate"],
            max_instances=p["max_instances"],
            rate_tolerance=p["rate_tolerance"],
            seeds=seeds,
            confidence=p["confidence"],
            headroom=p["headroom"],
        )
        # Advice about the runs only for input that can run: it used to come first, so
        # `--max-instances 0` printed a paragraph on --num-requests before its error.
        _warn_config_dropped(given)
        _warn_rate_set(given)
        _warn_short_probe(given, p["rate"])
        backend = make_backend(p["backend"], jobs=p["jobs"], address=p["address"])

    def on_probe(dep: Any, probe: Any) -> None:
        verdict = "meets" if probe.ok else "misses: " + "; ".join(probe.why)
        echo_err(f"{dep.label()} x{probe.instances} at {probe.rate:g}/s {verdict}", quiet)

    try:
        with cli_errors(debug):
            outcome = plan_capacity(
                base,
                deployments,
                objectives,
                rate=p["rate"],
                max_instances=p["max_instances"],
                backend=backend,
                saturation=p["saturation"],
                rate_tolerance=p["rate_tolerance"],
                gpu_hour_price=prices,
                on_probe=on_probe,
                seeds=seeds,
                confidence=p["confidence"],
                headroom=p["headroom"],
            )
    finally:
        backend.close()
    failed = [c for c in outcome.candidates if c.error and not c.probes]
    if failed and len(failed) == len(outcome.candidates):
        with cli_errors(debug):  # bad input (an unknown GPU, a TP the model cannot split)
            first = failed[0]
            raise ConfigError(
                f"no candidate could run: {first.deployment.label()}: {first.error}"
                + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else "")
            )
    if p["as_json"]:
        sys.stdout.write(json.dumps(outcome.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(format_plan(outcome))
    if p["plot"]:
        from inference_sim.report.plots import plot_plan

        with cli_errors(debug):
            path = plot_plan(outcome, p["plot"])
        echo_err(f"plot written to {path}", quiet)


_plan_params: list[click.Parameter] = [
    click.Option(
        ["--model", "models"],
        multiple=True,
        help="Model id (repeat for several); candidates are models x GPUs x TPs.",
    ),
    click.Option(
        ["--hardware", "hardware"],
        multiple=True,
        help="GPU (repeat or comma-separate; default: the model's catalog default).",
    ),
    click.Option(
        ["--tp", "tps"], type=int, multiple=True, help="Tensor-parallel degree (repeatable)."
    ),
    click.Option(
        ["--candidate", "candidates"],
        multiple=True,
        help="An explicit deployment MODEL:GPU:TP (or GPU:TP with one --model); repeatable.",
    ),
    click.Option(
        ["--pd-ratio", "pd_ratios"],
        multiple=True,
        help="Also try each deployment disaggregated at this prefill:decode ratio, e.g. 1:3 "
        "(repeatable); colocated candidates are kept alongside.",
    ),
    click.Option(
        ["--prefill-tp", "prefill_tps"],
        multiple=True,
        help="With --pd-ratio: the prefill pool's TP to try (repeatable or comma-separated, "
        "e.g. 1,2; default: the deployment's TP). Searched with --decode-tp.",
    ),
    click.Option(
        ["--decode-tp", "decode_tps"],
        multiple=True,
        help="With --pd-ratio: the decode pool's TP to try (repeatable or comma-separated, "
        "e.g. 1,2,4; default: the deployment's TP).",
    ),
    click.Option(["--rate"], type=float, required=True, help="Target request rate (requests/s)."),
    click.Option(
        ["--slo", "slos"],
        multiple=True,
        help="Objective on a summary metric: ttft_p99_ms=500 (at most), "
        "responses_per_sec>=50 (at least); repeatable. Without one a run must only "
        "serve every request, and the saturation rate is not searched.",
    ),
    click.Option(
        ["--max-instances"], type=int, default=16, show_default=True, help="Largest N tried."
    ),
    click.Option(
        ["--gpu-hour-price", "prices"],
        multiple=True,
        help="Price of one GPU-hour: PRICE for every GPU, or GPU=PRICE (repeatable).",
    ),
    click.Option(
        ["--saturation/--no-saturation"],
        default=True,
        show_default=True,
        help="Also find the highest rate the chosen deployment sustains (bisection).",
    ),
    click.Option(
        ["--rate-tolerance"],
        type=float,
        default=0.05,
        show_default=True,
        help="Relative precision of the saturation rate.",
    ),
    click.Option(["--config"], default=None, help="Run options from a YAML file (flags win)."),
    click.Option(
        ["--set", "assignments"],
        multiple=True,
        help="Any other run option as NAME=VALUE (repeatable).",
    ),
    click.Option(["--json", "as_json"], is_flag=True, default=False, help="Print JSON."),
    click.Option(
        ["--plot"], default=None, help="Write latency vs rate to this PNG (`plot` extra)."
    ),
    click.Option(
        ["--seeds"],
        default=None,
        help="Run every probe once per seed (e.g. 1,2,3) and judge the SLOs on the mean "
        "(or, with --confidence, on its confidence bound).",
    ),
    click.Option(["--replicates"], type=int, default=None, help="Like --seeds: SEED, SEED+1, ..."),
    click.Option(
        ["--confidence"],
        type=float,
        default=None,
        help="Require each SLO to hold for the one-sided confidence bound of the mean over "
        "the seeds (e.g. 0.95; needs 2+ seeds).",
    ),
    click.Option(
        ["--headroom"],
        type=float,
        default=1.0,
        show_default=True,
        help="Keep a margin: an SLO 'at most B' must hold at B x headroom (0.8: 20 % to "
        "spare); 'at least B' at B / headroom.",
    ),
    click.Option(["--quiet", "-q"], is_flag=True, default=False, help="No progress on stderr."),
    click.Option(["--debug"], is_flag=True, default=False, help="Show tracebacks for errors."),
]

plan_command = _backend_options(
    click.Command(
        "plan",
        callback=_plan,
        params=_plan_params + run_options(_PLAN_OWN),
        help="Fewest instances of each (model, GPU, TP) that meet the SLOs at a rate.\n\n"
        "Searches the instance count with the sweep backend, then the saturation rate; "
        "prints a ranked table (or --json with `instances` and the chosen run's `summary`).",
        context_settings={"max_content_width": 110},
    )
)


@each_warning_once()
def _tune(**p: Any) -> None:
    from inference_sim.config.unused import accept_reference_flags
    from inference_sim.core.extras import require
    from inference_sim.planning.fitness import parse_weights
    from inference_sim.planning.tune import bundle_yaml, tune
    from inference_sim.sweep.backends import make_backend

    debug, quiet = p.pop("debug"), p.pop("quiet")
    with cli_errors(debug):
        assigned = parse_assignments(p["assignments"])
        _refuse_tune_own(assigned)
        require("optuna", "tune", "blis tune")
        base = base_from_config(accept_reference_flags(collect_run_options(p, _TUNE_OWN)))
        base.update(assigned)
        weights = parse_weights(p["fitness_weights"])
        if p["jobs"] is not None and p["jobs"] < 1:
            raise ValueError(f"--jobs must be >= 1, got {p['jobs']}")
        from inference_sim.config.resolve import resolve

        resolve(base)  # bad base options fail now, with the flag's name
        if p["output"]:
            check_output("--output", p["output"])  # before the trials, not after them
            _refuse_input_overwrite([("--output", p["output"])], base, p["config"])
        backend = make_backend(p["backend"], jobs=p["jobs"], address=p["address"])

    def on_trial(t: Any) -> None:
        score = "skipped" if t.score is None else f"{t.score:.4f}"
        echo_err(f"trial {t.number}: {score} {json.dumps(t.options())}{t.note}", quiet)

    try:
        with cli_errors(debug):
            outcome = tune(
                base,
                weights=weights,
                trials=p["trials"],
                backend=backend,
                policies=_split(p["policies"]),
                scorers=_split(p["scorers"]),
                max_weight=p["max_weight"],
                schedulers=_split(p["schedulers"]),
                seed=p["tune_seed"],
                latency_ref_ms=p["latency_ref_ms"],
                on_trial=on_trial,
            )
    finally:
        backend.close()
    repeats = len(outcome.trials) - outcome.distinct
    echo_err(
        f"{len(outcome.trials)} trials, {outcome.distinct} distinct configurations"
        + (f" ({repeats} repeats reused an earlier trial's result)" if repeats else ""),
        quiet,
    )
    header = [f"blis tune on {base.get('model', '')} ({_workload_label(base)})"]
    text = bundle_yaml(outcome, header)
    if p["output"]:
        from inference_sim.core.outfiles import write_text

        write_text(p["output"], text)  # atomic, or through a device/FIFO
        echo_err(f"bundle written to {p['output']}", quiet)
    if p["as_json"]:
        sys.stdout.write(json.dumps(outcome.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(text)
    if outcome.best is None:
        sys.exit(1)


def _workload_label(base: dict[str, Any]) -> str:
    """What the tuned runs replayed or generated, for the bundle's header: the workload
    spec or the trace file when there is one (``--workload`` alone said "distribution"
    for a spec run), else the ``--workload`` name."""
    if base.get("workload_spec"):
        spec = base["workload_spec"]
        return f"workload spec {spec if isinstance(spec, str) else '(inline)'}"
    workload = str(base.get("workload") or "distribution")
    if workload == "traces" or (base.get("workload_traces_filepath") and "workload" not in base):
        return f"trace {base.get('workload_traces_filepath', '')}"
    return workload


_tune_params: list[click.Parameter] = [
    click.Option(["--trials"], type=int, default=40, show_default=True, help="Trials to run."),
    click.Option(
        ["--policies"],
        multiple=True,
        default=("round-robin,least-loaded,prefix-affinity,weighted",),
        show_default=True,
        help="Routing policies to try (comma-separated).",
    ),
    click.Option(
        ["--scorers"],
        multiple=True,
        default=("prefix-affinity,queue-depth,kv-utilization,load-balance",),
        show_default=True,
        help="Scorers whose weights are tuned for the weighted policy.",
    ),
    click.Option(
        ["--max-weight"],
        type=int,
        default=5,
        show_default=True,
        help="Scorer weights are integers 0..this.",
    ),
    click.Option(
        ["--schedulers"],
        multiple=True,
        default=(),
        help="Also tune the wait-queue scheduler over these (comma-separated).",
    ),
    click.Option(
        ["--fitness-weights"],
        default="p99_ttft:3,mean_e2e:1,throughput:2",
        show_default=True,
        help="What to maximise: key:weight,... over throughput, tokens_per_sec, "
        "mean_/p90_/p95_/p99_ttft, mean_/p90_/p95_/p99_e2e, mean_itl, p99_itl.",
    ),
    click.Option(
        ["--latency-ref-ms"],
        type=float,
        default=1000.0,
        show_default=True,
        help="A latency of this many ms scores 0.5.",
    ),
    click.Option(
        ["--tune-seed"], type=int, default=0, show_default=True, help="Optuna sampler seed."
    ),
    click.Option(["--config"], default=None, help="Run options from a YAML file (flags win)."),
    click.Option(
        ["--set", "assignments"],
        multiple=True,
        help="Any other run option as NAME=VALUE (repeatable).",
    ),
    click.Option(["--output", "-o"], default=None, help="Also write the bundle YAML here."),
    click.Option(["--json", "as_json"], is_flag=True, default=False, help="Print JSON."),
    click.Option(["--quiet", "-q"], is_flag=True, default=False, help="No progress on stderr."),
    click.Option(["--debug"], is_flag=True, default=False, help="Show tracebacks for errors."),
]

tune_command = _backend_options(
    click.Command(
        "tune",
        callback=_tune,
        params=_tune_params + run_options(_TUNE_OWN),
        help="Search routing policies and scorer weights with Optuna for the best fitness.\n\n"
        "Needs the `tune` extra. Prints the best configuration as a --policy-config bundle.",
        context_settings={"max_content_width": 110},
    )
)
