"""Policy tuning with Optuna: search routing policies and scorer weights for fitness.

Each trial picks a routing policy (and, for ``weighted``, an integer weight in
``0..max_weight`` per scorer; all-zero weights are skipped) and, when asked, a
wait-queue scheduler. Trials are asked from Optuna's TPE sampler (seeded) in batches
of :data:`TRIAL_BATCH`, whatever the backend's slots (a batch sized by the slots made
the trials depend on ``--jobs``), run in parallel, and told their fitness score
(:mod:`inference_sim.planning.fitness`); a configuration already tried is not run
again: the trial reuses the earlier result and says so (``repeat_of``). The best
configuration is printed as a ``--policy-config`` bundle.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from inference_sim.config.errors import ConfigError
from inference_sim.core.extras import require
from inference_sim.planning.fitness import fitness
from inference_sim.sweep.backends import Backend, LocalBackend, execute_run

DEFAULT_POLICIES = ("round-robin", "least-loaded", "prefix-affinity", "weighted")
DEFAULT_SCORERS = ("prefix-affinity", "queue-depth", "kv-utilization", "load-balance")
#: Trials asked of the sampler per round, whatever the parallel slots: what it proposes
#: depends on what it was told before, so the same command gives the same trials for
#: every ``--jobs`` (more slots than this stay idle in a round).
TRIAL_BATCH = 8


@dataclass
class Trial:
    number: int
    params: dict[str, Any]
    score: float | None
    summary: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    #: The earlier trial with the same configuration, whose result this one reuses (the
    #: sampler may propose a configuration again; it is not re-run), else None.
    repeat_of: int | None = None

    def options(self) -> dict[str, Any]:
        return params_to_options(self.params)

    @property
    def note(self) -> str:
        """`` (repeat of trial 3, not re-run)`` for a reused result, else ``""``."""
        return "" if self.repeat_of is None else f" (repeat of trial {self.repeat_of}, not re-run)"


@dataclass
class TuneOutcome:
    trials: list[Trial]
    weights: dict[str, float]

    @property
    def ranked(self) -> list[Trial]:
        ok = [t for t in self.trials if t.score is not None]
        return sorted(ok, key=lambda t: (-t.score, t.number))  # type: ignore[operator]

    @property
    def best(self) -> Trial | None:
        r = self.ranked
        return r[0] if r else None

    @property
    def distinct(self) -> int:
        """How many distinct configurations were tried (run, or skipped as all-zero
        weights): the trials less the repeats that reused an earlier trial's result."""
        return sum(1 for t in self.trials if t.repeat_of is None)

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "fitness_weights": self.weights,
            "best": None
            if best is None
            else {
                "score": best.score,
                "params": best.params,
                "bundle": bundle_dict(best.params),
                "summary": best.summary,
            },
            "distinct_configurations": self.distinct,
            "trials": [
                {
                    "number": t.number,
                    "params": t.params,
                    "score": t.score,
                    "error": t.error,
                    "repeat_of": t.repeat_of,
                }
                for t in self.trials
            ],
        }


def params_to_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """Trial parameters -> run options (``routing_policy``, ``routing_scorers``, ...)."""
    out: dict[str, Any] = {"routing_policy": params["routing_policy"]}
    scorers = _scorers(params)
    if params["routing_policy"] == "weighted":
        out["routing_scorers"] = ",".join(f"{n}:{w}" for n, w in scorers)
    if "scheduler" in params:
        out["scheduler"] = params["scheduler"]
    return out


def _scorers(params: Mapping[str, Any]) -> list[tuple[str, int]]:
    return [(k[2:], int(v)) for k, v in params.items() if k.startswith("w:") and int(v) > 0]


def bundle_dict(params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``--policy-config`` bundle for trial parameters."""
    routing: dict[str, Any] = {"policy": params["routing_policy"]}
    if params["routing_policy"] == "weighted":
        routing["scorers"] = [{"name": n, "weight": w} for n, w in _scorers(params)]
    doc: dict[str, Any] = {"routing": routing}
    if "scheduler" in params:
        doc["scheduler"] = params["scheduler"]
    return doc


def bundle_yaml(outcome: TuneOutcome, header: Sequence[str] = ()) -> str:
    best = outcome.best
    if best is None:
        return "# no trial finished\n"
    lines = [f"# {h}" for h in header]
    weights = ",".join(f"{k}:{v:g}" for k, v in outcome.weights.items())
    tried = f"{len(outcome.trials)} trials"
    if outcome.distinct < len(outcome.trials):
        tried += f", {outcome.distinct} distinct configurations"
    lines.append(f"# best of {tried}: fitness {best.score:.4f} ({weights})")
    seen = {json.dumps(params_to_options(best.params), sort_keys=True)}
    for t in outcome.ranked[1:]:
        key = json.dumps(params_to_options(t.params), sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"#   runner-up {t.score:.4f}: {json.dumps(params_to_options(t.params))}")
        if len(seen) >= 5:
            break
    body = yaml.safe_dump(bundle_dict(best.params), sort_keys=False)
    return "\n".join(lines) + "\n" + body


def _check_names(
    policies: Sequence[str], scorers: Sequence[str], schedulers: Sequence[str]
) -> None:
    """Every name the search may draw, checked before any trial: a typo would otherwise
    surface as skipped or failed trials, depending on which the sampler drew first."""
    from inference_sim.policies.base import PolicyError
    from inference_sim.policies.routing import ROUTING
    from inference_sim.policies.scheduler import SCHEDULERS
    from inference_sim.policies.scorers import SCORERS

    for flag, registry, names in (
        ("--policies", ROUTING, policies),
        ("--scorers", SCORERS, scorers),
        ("--schedulers", SCHEDULERS, schedulers),
    ):
        for name in names:
            try:
                registry.lookup(name)
            except PolicyError as exc:
                raise ConfigError(f"{flag}: {exc}") from None


def tune(
    base: Mapping[str, Any],
    *,
    weights: Mapping[str, float],
    trials: int = 40,
    backend: Backend | None = None,
    policies: Sequence[str] = DEFAULT_POLICIES,
    scorers: Sequence[str] = DEFAULT_SCORERS,
    max_weight: int = 5,
    schedulers: Sequence[str] = (),
    seed: int = 0,
    latency_ref_ms: float = 1000.0,
    on_trial: Callable[[Trial], None] | None = None,
) -> TuneOutcome:
    """Run ``trials`` trials (see the module doc) and return them with the best first."""
    optuna = require("optuna", "tune", "blis tune")
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    if not policies:
        raise ConfigError("--policies: give at least one routing policy")
    if "weighted" in policies and not scorers:
        raise ConfigError("--scorers: the weighted policy needs at least one scorer")
    _check_names(policies, scorers, schedulers)
    if max_weight < 1:
        raise ConfigError(f"--max-weight must be >= 1, got {max_weight}")
    if not (math.isfinite(latency_ref_ms) and latency_ref_ms > 0):
        raise ConfigError(f"--latency-ref-ms must be a finite number > 0, got {latency_ref_ms}")
    if seed < 0:
        raise ConfigError(f"--tune-seed must be >= 0, got {seed}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    backend = backend or LocalBackend()
    done: list[Trial] = []
    cache: dict[str, tuple[float | None, dict[str, Any], str]] = {}
    first: dict[str, int] = {}  # configuration -> the trial that tried it first
    checked = False
    while len(done) < trials:
        k = min(TRIAL_BATCH, trials - len(done))
        batch = []
        for _ in range(k):
            ot = study.ask()
            params: dict[str, Any] = {
                "routing_policy": ot.suggest_categorical("routing_policy", list(policies))
            }
            if params["routing_policy"] == "weighted":
                for name in scorers:
                    params[f"w:{name}"] = ot.suggest_int(f"w:{name}", 0, max_weight)
            if schedulers:
                params["scheduler"] = ot.suggest_categorical("scheduler", list(schedulers))
            batch.append((ot, params))
        to_run: dict[str, dict[str, Any]] = {}
        keys = []
        for _ot, params in batch:
            key = json.dumps(params_to_options(params), sort_keys=True)
            keys.append(key)
            skip = params["routing_policy"] == "weighted" and not _scorers(params)
            if key not in cache and key not in to_run and not skip:
                opts = dict(base)
                opts.update(params_to_options(params))
                to_run[key] = opts
        run_keys = list(to_run)
        results: list[dict[str, Any] | None] = [None] * len(run_keys)

        def store(i: int, res: dict[str, Any], results: list[Any] = results) -> None:
            results[i] = res

        if run_keys:
            backend.map(execute_run, [to_run[k] for k in run_keys], store)
        errors = []
        for key, res in zip(run_keys, results, strict=True):
            assert res is not None
            if res.get("status") == "ok":
                summary = res["summary"]
                cache[key] = (fitness(summary, weights, latency_ref_ms=latency_ref_ms), summary, "")
                checked = True
            else:
                errors.append(str(res.get("error", "run failed")))
                cache[key] = (None, {}, errors[-1])
        if errors and not checked:  # nothing has worked yet: the base options are broken
            raise ConfigError(f"blis tune: every run failed so far: {errors[0]}")
        for (ot, params), key in zip(batch, keys, strict=True):
            repeat_of = first.get(key)
            if key not in cache:  # all-zero scorer weights
                study.tell(ot, state=optuna.trial.TrialState.PRUNED)
                trial = Trial(len(done), params, None, error="all scorer weights are 0")
            else:
                score, summary, error = cache[key]
                if score is None:
                    study.tell(ot, state=optuna.trial.TrialState.FAIL)
                else:
                    study.tell(ot, score)
                trial = Trial(len(done), params, score, summary, error)
            trial.repeat_of = repeat_of
            first.setdefault(key, trial.number)
            done.append(trial)
            if on_trial is not None:
                on_trial(trial)
    return TuneOutcome(done, dict(weights))
