"""Latency models by name: built-ins and user models go through the same door.

``--latency-model NAME`` resolves, like a routing policy, to

1. a registered name (the built-ins ``blackbox``, ``roofline`` and ``calibrated``
   register themselves below with :func:`register_latency_model`, as a user can), or
2. ``module.path:ClassName`` or ``path/to/file.py:ClassName`` -- a class or factory
   imported on demand (:mod:`inference_sim.core.plugins`).

A model is built by calling its factory with the keyword arguments it names out of the
run's context (:data:`CONTEXT_KEYS`): ``architecture`` (catalog ModelArchitecture),
``gpu`` (GpuSpec), ``tp``, ``alpha``/``beta`` (trained or given coefficients),
``coefficients`` (the calibrated set), ``sampling`` and ``options`` (every resolved
option). What the run must resolve before building it is the registration's
``inputs``: ``"trained"`` (alpha/beta from the catalog or the flags, like ``blackbox``)
or ``"architecture"`` (a model architecture and GPU, like ``roofline``; the default for
plug-ins, which may set a class attribute ``inputs = "trained"`` instead).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inference_sim.core import plugins
from inference_sim.latency.base import LatencyModel
from inference_sim.latency.blackbox import LatencyConfigError

LatencyFactory = Callable[..., LatencyModel]

#: What a latency factory may ask for, by parameter name.
CONTEXT_KEYS = ("architecture", "gpu", "tp", "alpha", "beta", "coefficients", "sampling", "options")
INPUTS = ("trained", "architecture")


@dataclass(frozen=True)
class LatencyEntry:
    """A registered latency model: how to build it and what the run must resolve first."""

    name: str
    factory: LatencyFactory
    inputs: str = "architecture"


_REGISTRY: dict[str, LatencyEntry] = {}
_BUILTINS: set[str] = set()  # the package's own models (their failures are bugs)


def register_latency_model(name: str, factory: LatencyFactory, *, inputs: str = "") -> None:
    """Make ``factory(**context)`` available as ``--latency-model name``.

    ``inputs`` is ``"trained"`` or ``"architecture"`` (default: the factory's ``inputs``
    attribute, else ``"architecture"``).
    """
    if not name or ":" in name:
        raise ValueError(f"invalid latency model name {name!r}")
    _REGISTRY[name] = LatencyEntry(name, factory, _inputs_of(factory, inputs, name))


def latency_model_names() -> list[str]:
    """Registered names, sorted (what error messages list)."""
    return sorted(_REGISTRY)


def is_plugin(name: str) -> bool:
    """Whether ``name`` is a ``module:Class`` plug-in spec rather than a registered name."""
    return ":" in name


def lookup_latency_model(name: str) -> LatencyEntry:
    """The registered entry for ``name``, or a plug-in loaded from ``module:Class``."""
    found = _REGISTRY.get(name)
    if found is not None:
        return found
    if is_plugin(name):
        factory = plugins.load_object(name, "--latency-model", LatencyConfigError)
        if not callable(factory):
            raise LatencyConfigError(f"--latency-model {name!r} is not a class or factory")
        return LatencyEntry(name, factory, _inputs_of(factory, "", name))
    known = ", ".join(latency_model_names())
    raise LatencyConfigError(
        f"--latency-model: unknown model {name!r}; valid: auto, {known} "
        f"(or a plug-in as {plugins.PLUGIN_HINT})"
    )


def create_latency_model(name: str, **context: Any) -> LatencyModel:
    """Build latency model ``name`` with the context arguments its factory accepts."""
    entry = lookup_latency_model(name)
    try:
        model = plugins.call_with_accepted(
            entry.factory, context, f"--latency-model {name!r}", LatencyConfigError
        )
    except LatencyConfigError:
        raise
    except Exception as exc:
        if name in _BUILTINS:
            raise  # a bug of ours: keep the traceback
        # A user's constructor that fails is bad input like any other: one line, exit 2.
        raise LatencyConfigError(
            f"--latency-model {name!r}: cannot construct it: {type(exc).__name__}: {exc}"
        ) from None
    missing = [
        m
        for m in ("step_time", "queueing_time", "output_token_time")
        if not callable(getattr(model, m, None))
    ]
    if missing:
        raise LatencyConfigError(
            f"--latency-model {name!r} built a {type(model).__name__}, which is not a latency "
            f"model (missing {', '.join(missing)}; see docs/python-api.md)"
        )
    return model  # type: ignore[no-any-return]


def _inputs_of(factory: Any, inputs: str, name: str) -> str:
    value = inputs or getattr(factory, "inputs", "") or "architecture"
    if value not in INPUTS:
        raise LatencyConfigError(
            f"latency model {name!r}: inputs must be one of {', '.join(INPUTS)}, got {value!r}"
        )
    return str(value)


def _register_builtins() -> None:
    from inference_sim.latency.blackbox import BlackboxLatencyModel
    from inference_sim.latency.calibrated import CalibratedLatencyModel
    from inference_sim.latency.roofline import RooflineLatencyModel

    def blackbox(alpha: Any, beta: Any) -> LatencyModel:
        return BlackboxLatencyModel(alpha, beta)

    def roofline(
        architecture: Any, gpu: Any, tp: int, alpha: Any = (0.0, 0.0, 0.0)
    ) -> LatencyModel:
        return RooflineLatencyModel(architecture, gpu, tp, alpha)

    def calibrated(
        architecture: Any, gpu: Any, tp: int, coefficients: Any = None, sampling: str = "auto"
    ) -> LatencyModel:
        return CalibratedLatencyModel(architecture, gpu, tp, coefficients, sampling=sampling)

    _BUILTINS.update(("blackbox", "roofline", "calibrated"))
    register_latency_model("blackbox", blackbox, inputs="trained")
    register_latency_model("roofline", roofline, inputs="architecture")
    register_latency_model("calibrated", calibrated, inputs="architecture")


_register_builtins()
