"""One registry per policy kind: built-in names, user plug-ins and entry points.

A name resolves, in this order, to

1. a registered name (the built-ins register themselves through :meth:`Registry.register`,
   exactly as a user could);
2. ``module.path:ClassName`` or ``path/to/file.py:ClassName`` -- a class (or any
   factory) imported on demand; a module is looked up on ``sys.path`` and then in the
   working directory;
3. an installed entry point of the kind's group (e.g. ``inference_sim.routing``).

Objects are built by calling the factory with the keyword arguments it accepts out of
the context the simulator offers (e.g. ``block_size``, ``num_instances``,
``token_bucket_capacity``); a factory taking ``**kwargs`` receives them all. The built
object must have the kind's method, otherwise the user gets a one-line error.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from inference_sim.core.suggest import did_you_mean
from inference_sim.policies.base import PolicyError

Factory = Callable[..., Any]

PLUGIN_HINT = "module.path:ClassName"


class Registry:
    """Names of one policy kind mapped to factories."""

    def __init__(self, kind: str, label: str, method: str, default: str, signature: str) -> None:
        self.kind = kind  # e.g. "routing"
        self.label = label  # e.g. "routing policy"
        self.method = method  # e.g. "route"
        self.default = default  # the name "" stands for
        self.signature = signature  # e.g. "route(request, state)"
        self.entry_point_group = f"inference_sim.{kind}"
        self._factories: dict[str, Factory] = {}

    # --- registration ------------------------------------------------------------------
    def register(self, name: str, factory: Factory | None = None) -> Any:
        """Register ``factory`` under ``name``; usable as a class decorator."""

        def add(f: Factory) -> Factory:
            if not name or ":" in name:
                raise ValueError(f"invalid {self.label} name {name!r}")
            self._factories[name] = f
            return f

        return add(factory) if factory is not None else add

    def names(self) -> list[str]:
        """Registered names, sorted (what error messages list)."""
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return (name or self.default) in self._factories

    # --- lookup ------------------------------------------------------------------------
    def unknown(self, name: str) -> PolicyError:
        return PolicyError(
            f"unknown {self.label} {name!r}{did_you_mean(name, self.names())}; "
            f"valid: {', '.join(self.names())} "
            f"(or a plug-in as {PLUGIN_HINT})"
        )

    def lookup(self, name: str) -> Factory:
        """The factory for ``name``; PolicyError (listing the valid names) if none."""
        key = name or self.default
        found = self._factories.get(key)
        if found is not None:
            return found
        if ":" in key:
            factory = load_object(key, self.label)
        else:
            factory = self._entry_point(key)
            if factory is None:
                raise self.unknown(key)
        if inspect.isclass(factory) and not callable(getattr(factory, self.method, None)):
            raise PolicyError(
                f"{self.label} {key!r}: {factory.__name__} does not implement the "
                f"{self.label} protocol (needs a method {self.signature})"
            )
        if not callable(factory):
            if callable(getattr(factory, self.method, None)):
                obj = factory
                return lambda: obj  # a ready-made policy object: use it as is
            raise PolicyError(f"{self.label} {key!r} is not a class, factory or policy object")
        return factory

    def _entry_point(self, name: str) -> Factory | None:
        try:
            eps = metadata.entry_points(group=self.entry_point_group)
        except Exception:  # pragma: no cover - broken installation metadata
            return None
        for ep in eps:
            if ep.name == name:
                try:
                    return ep.load()  # type: ignore[no-any-return]
                except Exception as exc:
                    raise PolicyError(
                        f"{self.label} {name!r}: entry point {ep.value} failed to load: {exc}"
                    ) from None
        return None

    def create(self, name: str, **context: Any) -> Any:
        """Build the policy ``name`` with the context arguments its factory accepts."""
        factory = self.lookup(name)
        obj = call_with_accepted(factory, context, f"{self.label} {name or self.default!r}")
        if not callable(getattr(obj, self.method, None)):
            raise PolicyError(
                f"{self.label} {name!r} built a {type(obj).__name__}, which does not implement "
                f"the {self.label} protocol (needs a method {self.signature})"
            )
        return obj


def call_with_accepted(factory: Factory, context: dict[str, Any], what: str) -> Any:
    """Call ``factory`` with those ``context`` entries its signature names."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        sig = None
    if sig is None:
        kwargs: dict[str, Any] = {}
    elif any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        kwargs = dict(context)
    else:
        accepted = {
            n
            for n, p in sig.parameters.items()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        }
        kwargs = {k: v for k, v in context.items() if k in accepted}
    try:
        return factory(**kwargs)
    except PolicyError:
        raise
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"{what}: cannot construct it: {exc}") from None


def load_object(spec: str, label: str = "plug-in") -> Any:
    """Import ``module.path:Name`` or ``path/to/file.py:Name`` (``Name`` may be dotted)."""
    module_part, _, attr = spec.rpartition(":")
    if not module_part or not attr:
        raise PolicyError(f"{label} {spec!r}: expected {PLUGIN_HINT}")
    if module_part.endswith(".py") or "/" in module_part or os.sep in module_part:
        module = _load_file(module_part, spec, label)
    else:
        module = _import_module(module_part, spec, label)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PolicyError(
                f"{label} {spec!r}: module {module_part!r} has no attribute {attr!r}"
            ) from None
    return obj


def _import_module(name: str, spec: str, label: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        top = name.split(".")[0]
        if exc.name != top or cwd in sys.path or "" in sys.path:
            raise PolicyError(f"{label} {spec!r}: cannot import {name!r}: {exc}") from None
        sys.path.append(cwd)  # `blis` as a console script does not search the working dir
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc2:
            raise PolicyError(f"{label} {spec!r}: cannot import {name!r}: {exc2}") from None
    except Exception as exc:
        raise PolicyError(
            f"{label} {spec!r}: importing {name!r} failed: {type(exc).__name__}: {exc}"
        ) from None


def _load_file(path: str, spec: str, label: str) -> Any:
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise PolicyError(f"{label} {spec!r}: no such file {path!r}")
    mod_name = "inference_sim_plugin_" + "".join(c if c.isalnum() else "_" for c in str(file))
    cached = sys.modules.get(mod_name)
    if cached is not None:
        return cached
    mspec = importlib.util.spec_from_file_location(mod_name, file)
    if mspec is None or mspec.loader is None:  # pragma: no cover - not a Python file
        raise PolicyError(f"{label} {spec!r}: cannot load {path!r} as Python")
    module = importlib.util.module_from_spec(mspec)
    sys.modules[mod_name] = module
    try:
        mspec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[mod_name]
        raise PolicyError(
            f"{label} {spec!r}: loading {path!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    return module
