"""Plug-ins by name: import ``module.path:Name`` or ``path/to/file.py:Name`` on demand, and
call a factory with the context arguments it accepts.

Every registry (policies, latency models) goes through these helpers, so a user's
Python class is loaded and built the same way whatever its kind. Errors are raised as
the caller's error type (one line naming the plug-in and what went wrong).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Factory = Callable[..., Any]

PLUGIN_HINT = "module.path:ClassName"


def call_with_accepted(
    factory: Factory,
    context: dict[str, Any],
    what: str,
    error: type[Exception] = ValueError,
) -> Any:
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
    except error:
        raise
    except (TypeError, ValueError) as exc:
        raise error(f"{what}: cannot construct it: {exc}") from None


def load_object(spec: str, label: str = "plug-in", error: type[Exception] = ValueError) -> Any:
    """Import ``module.path:Name`` or ``path/to/file.py:Name`` (``Name`` may be dotted)."""
    module_part, _, attr = spec.rpartition(":")
    if not module_part or not attr:
        raise error(f"{label} {spec!r}: expected {PLUGIN_HINT}")
    if module_part.endswith(".py") or "/" in module_part or os.sep in module_part:
        module = _load_file(module_part, spec, label, error)
    else:
        module = _import_module(module_part, spec, label, error)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise error(
                f"{label} {spec!r}: module {module_part!r} has no attribute {attr!r}"
            ) from None
    return obj


def _import_module(name: str, spec: str, label: str, error: type[Exception]) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        top = name.split(".")[0]
        if exc.name != top or cwd in sys.path or "" in sys.path:
            raise error(f"{label} {spec!r}: cannot import {name!r}: {exc}") from None
        sys.path.append(cwd)  # `blis` as a console script does not search the working dir
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc2:
            raise error(f"{label} {spec!r}: cannot import {name!r}: {exc2}") from None
    except Exception as exc:
        raise error(
            f"{label} {spec!r}: importing {name!r} failed: {type(exc).__name__}: {exc}"
        ) from None


#: Attribute of a module loaded from a plug-in file: the digest of the source it ran.
_SOURCE_DIGEST = "__inference_sim_source_digest__"


def _load_file(path: str, spec: str, label: str, error: type[Exception]) -> Any:
    """The module of plug-in file ``path``, run again whenever the file's content changed.

    A notebook user edits ``my_policy.py`` and runs the cell again: the edit must take
    effect, as it does on the command line (a new process). Keyed by content (a digest of
    the bytes), not the modification time, which a quick edit may leave unchanged; the
    files are small, and they are read once per plug-in lookup, not per step. Objects
    taken from the old version (a class registered by name) stay as they were.
    """
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise error(f"{label} {spec!r}: no such file {path!r}")
    try:
        source = file.read_bytes()
    except OSError as exc:
        raise error(f"{label} {spec!r}: cannot read {path!r}: {exc.strerror or exc}") from None
    digest = hashlib.sha256(source).hexdigest()
    mod_name = "inference_sim_plugin_" + "".join(c if c.isalnum() else "_" for c in str(file))
    cached = sys.modules.get(mod_name)
    if cached is not None and getattr(cached, _SOURCE_DIGEST, None) == digest:
        return cached
    mspec = importlib.util.spec_from_file_location(mod_name, file)
    if mspec is None or mspec.loader is None:  # pragma: no cover - not a Python file
        raise error(f"{label} {spec!r}: cannot load {path!r} as Python")
    module = importlib.util.module_from_spec(mspec)
    setattr(module, _SOURCE_DIGEST, digest)
    sys.modules[mod_name] = module  # replaces an older version's module
    try:
        # The bytes just hashed, compiled here: the loader's bytecode cache is keyed by
        # modification time and size, so a quick edit of the same size would run stale code.
        exec(compile(source, str(file), "exec", dont_inherit=True), module.__dict__)
    except Exception as exc:
        del sys.modules[mod_name]
        raise error(
            f"{label} {spec!r}: loading {path!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    return module


#: A ``path/to/file.py:Name`` plug-in spec inside a value (a list of ``name:weight``
#: scorers may hold several): the path is everything before ``.py:`` back to a comma.
_FILE_SPEC = re.compile(r"(^|,)(\s*)([^,]*?\.py):")


def rebase_plugin_files(value: object, folder: str) -> object:
    """``value`` with every relative ``file.py:Name`` path made absolute against
    ``folder`` (the folder of the file that names it, or the working folder), so the
    plug-in is found from wherever the configuration is read again."""
    if isinstance(value, list):
        return [rebase_plugin_files(v, folder) for v in value]
    if not isinstance(value, str) or ".py:" not in value:
        return value

    def absolute(m: re.Match[str]) -> str:
        path = m.group(3)
        if not os.path.isabs(path):
            path = os.path.normpath(os.path.join(folder, path))
        return f"{m.group(1)}{m.group(2)}{path}:"

    return _FILE_SPEC.sub(absolute, value)
