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

import inspect
from importlib import metadata
from typing import Any

from inference_sim.core import plugins
from inference_sim.core.plugins import PLUGIN_HINT, Factory
from inference_sim.core.suggest import did_you_mean
from inference_sim.policies.base import PolicyError

__all__ = ["PLUGIN_HINT", "Factory", "Registry", "call_with_accepted", "load_object"]


def call_with_accepted(factory: Factory, context: dict[str, Any], what: str) -> Any:
    """Call ``factory`` with those ``context`` entries its signature names."""
    return plugins.call_with_accepted(factory, context, what, PolicyError)


def load_object(spec: str, label: str = "plug-in") -> Any:
    """Import ``module.path:Name`` or ``path/to/file.py:Name`` (``Name`` may be dotted)."""
    return plugins.load_object(spec, label, PolicyError)


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
