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

A user's model (anything but the package's own factories) is handed to the engines
inside :class:`CheckedLatencyModel`, which checks every time it returns: the run's
pre-run probe sees a few typical steps only, and a bad time later on would otherwise
run on silently (a negative step moves the clock back) or crash deep in the engine.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from inference_sim.core import plugins
from inference_sim.core.errors import ConfigError
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
#: The package's own factories by name: a model built by one of them is ours (its
#: failures are bugs, its times need no checking). A user's registration under the same
#: name replaces the entry, and the model it builds is a user's (checked, errors one line).
_BUILTINS: dict[str, LatencyFactory] = {}


def register_latency_model(name: str, factory: LatencyFactory, *, inputs: str = "") -> None:
    """Make ``factory(**context)`` available as ``--latency-model name``.

    ``inputs`` is ``"trained"`` or ``"architecture"`` (default: the factory's ``inputs``
    attribute, else ``"architecture"``). A factory registered under a built-in's name
    replaces it and is a user's model from then on (:func:`is_builtin`): its constructor
    errors are one line and its times are checked.
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
    builtin = is_builtin(entry)
    try:
        model = plugins.call_with_accepted(
            entry.factory, context, f"--latency-model {name!r}", LatencyConfigError
        )
    except LatencyConfigError:
        raise
    except Exception as exc:
        if builtin:
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
    if builtin:
        return model  # type: ignore[no-any-return]  # the hot path stays a direct call
    return CheckedLatencyModel(model, f"--latency-model {name!r} ({type(model).__name__})")


def is_builtin(entry: LatencyEntry) -> bool:
    """Whether ``entry`` builds one of the package's own models (not a user's, even when
    the user registered it under a built-in's name)."""
    return _BUILTINS.get(entry.name) is entry.factory


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class CheckedLatencyModel:
    """A user's latency model whose every returned time is checked: whole µs, >= 0.

    The engines add step times to integer µs clocks: a negative time moves the clock
    back (a run that looks fast), a float fails deep in the engine with a raw
    ``TypeError``. This proxy stops the run at the first bad value with a one-line
    :class:`ConfigError` naming the model, the method, the value and the step. It accepts
    what the pre-run probe accepts: an ``int`` or any integral number (numpy integers,
    converted to ``int``), not a float even if whole, nor a bool. A failure inside the
    model mid-run is one line too (chained to the original exception).

    Everything else is the model's own: other attributes are read from it (``hasattr``
    probes such as ``extend_last_step`` and ``async_scheduling`` see the same answer),
    and ``isinstance`` sees the model's class (``__class__``), so a subclass of a
    built-in is priced as that built-in. Built-in models are never wrapped.
    """

    __slots__ = ("_label", "_model", "_price", "_steps")

    def __init__(self, model: Any, label: str) -> None:
        self._model = model
        self._label = label
        self._steps = 0
        self._price = model.step_time  # bound once: step_time is the hot path

    @property  # type: ignore[misc]  # read-only on purpose
    def __class__(self) -> type:  # what isinstance() falls back to: the model's class
        return type(self._model)

    def __getattr__(self, name: str) -> Any:
        if name in CheckedLatencyModel.__slots__:  # not set yet (never for a built proxy)
            raise AttributeError(name)
        value = getattr(self._model, name)
        if name == "step_time_from" and callable(value):
            return self._checked_step_time_from(value)
        return value

    def __repr__(self) -> str:
        return f"CheckedLatencyModel({self._model!r})"

    @property
    def unchecked_model(self) -> Any:
        """The user's model itself: the pre-run probe (``config.resolve``) prices a
        typical step with it and reports a bad value in its own words, naming the step
        shape it priced."""
        return self._model

    def step_time(self, batch: Any) -> int:
        self._steps += 1
        try:
            t = self._price(batch)
        except Exception as exc:
            self._failed("step_time", exc)
        if type(t) is int and t >= 0:
            return t
        return self._whole("step_time", t)

    def queueing_time(self, req: Any) -> int:
        try:
            t = self._model.queueing_time(req)
        except Exception as exc:
            self._failed("queueing_time", exc)
        if type(t) is int and t >= 0:
            return t
        return self._whole("queueing_time", t)

    def output_token_time(self) -> int:
        try:
            t = self._model.output_token_time()
        except Exception as exc:
            self._failed("output_token_time", exc)
        if type(t) is int and t >= 0:
            return t
        return self._whole("output_token_time", t)

    def _where(self, method: str) -> str:
        """Which step of this instance's run: the engine calls ``step_time`` once a step."""
        if method in ("step_time", "step_time_from"):
            return f"at its {_ordinal(self._steps)} step"
        return f"after {self._steps} steps"

    def _whole(self, method: str, t: Any) -> Any:
        """``t`` as an ``int`` if it is a whole number of µs >= 0, else ConfigError."""
        if isinstance(t, numbers.Integral) and not isinstance(t, bool) and int(t) >= 0:
            return int(t)
        problem = "latency models return whole microseconds (an int)"
        if isinstance(t, numbers.Real) and t < 0:
            problem = "times must be >= 0"
        raise ConfigError(
            f"{self._label} returned {t!r} from {method} {self._where(method)}: {problem}; "
            "see docs/python-api.md"
        )

    def _failed(self, method: str, exc: Exception) -> NoReturn:
        if isinstance(exc, ConfigError):
            raise exc
        raise ConfigError(
            f"{self._label} failed in {method} {self._where(method)}: {type(exc).__name__}: {exc}"
        ) from exc

    def _checked_step_time_from(self, step_from: Callable[..., Any]) -> Callable[..., Any]:
        """``step_time_from`` (a model's step shape, used to price speculative drafts): a
        finite real >= 0 (callers round it to µs)."""

        def checked(*args: Any, **kwargs: Any) -> Any:
            try:
                t = step_from(*args, **kwargs)
            except Exception as exc:
                self._failed("step_time_from", exc)
            if isinstance(t, numbers.Real) and not isinstance(t, bool) and 0 <= float(t) < math.inf:
                return t
            raise ConfigError(
                f"{self._label} returned {t!r} from step_time_from "
                f"{self._where('step_time_from')}: times must be finite and >= 0; see "
                "docs/python-api.md"
            )

        return checked


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

    _BUILTINS.update(blackbox=blackbox, roofline=roofline, calibrated=calibrated)
    register_latency_model("blackbox", blackbox, inputs="trained")
    register_latency_model("roofline", roofline, inputs="architecture")
    register_latency_model("calibrated", calibrated, inputs="architecture")


_register_builtins()
