"""Where sweep runs execute: this machine's processes (default) or a Ray cluster.

A backend maps a module-level function over a list of items and reports each result
as it arrives; the function returns a dict with a ``status`` key ("ok" or "failed").
A run that raises is reported by the function itself; a worker that dies (killed,
out of memory) is reported by the backend as ``{"status": "failed", "error": ...}``.
Results do not depend on the backend, the number of workers or the order runs finish.

Plug-ins registered from Python (``register_latency_model``, ``ROUTING.register``, ...)
live in the registries of this process only; a worker starts from a fresh import. Each
task therefore carries them (:func:`plugin_entries`) and the worker registers them
before the run (:func:`install_plugins`), so a registered name works in a worker as a
built-in name does. A class that a worker cannot import (one defined in ``python -c``
or a notebook) makes :class:`LocalBackend` run the runs in this process instead.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pickle
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Protocol

from inference_sim.core.extras import require
from inference_sim.core.logs import LOGGER_NAME

ResultCallback = Callable[[int, dict[str, Any]], None]
Worker = Callable[[Any], dict[str, Any]]

log = logging.getLogger(LOGGER_NAME)


class _HeldWarnings(logging.Filter):
    """Keeps a run's warnings out of the worker's stderr and in a list, so that the
    process that asked for the runs gives them (:func:`relay_warnings`), once each: a
    sweep, plan or tune runs the same options many times, in many processes."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        if (text := record.getMessage()) not in self.messages:
            self.messages.append(text)
        return False


def relay_warnings(result: dict[str, Any]) -> dict[str, Any]:
    """Give the warnings a worker held back (``result["warnings"]``) in this process."""
    for text in result.pop("warnings", ()):
        log.warning(text)
    return result


class Backend(Protocol):
    name: str
    jobs: int

    def map(self, func: Worker, items: Sequence[Any], on_result: ResultCallback) -> None: ...

    def close(self) -> None: ...


def failed(message: str) -> dict[str, Any]:
    return {"status": "failed", "error": message}


# --- runs ------------------------------------------------------------------------------


def is_run_failure(exc: BaseException) -> bool:
    """Whether ``exc`` raised by a run is that run's failure, not the command's.

    Everything but the user's Ctrl-C (KeyboardInterrupt) and a generator being closed
    (GeneratorExit): a plug-in that calls ``sys.exit`` raises SystemExit, which with
    ``-j 1`` (the runs in this process) used to end the whole sweep, plan or tune with
    no table, while in a worker process it was a failed row; now it is one either way
    (``SystemExit: plugin gave up``)."""
    return not isinstance(exc, KeyboardInterrupt | GeneratorExit)


def execute_run(options: dict[str, Any]) -> dict[str, Any]:
    """Resolve and run one configuration; never raises (failures come back as data)."""
    start = time.perf_counter()
    held = _HeldWarnings()
    others = log.filters[:]  # e.g. each_warning_once's: it sees the warning when relayed
    log.filters[:] = [held]
    try:
        from inference_sim.config.resolve import resolve
        from inference_sim.runner import run_plan

        results = run_plan(resolve(options), timeseries=False)
        out = {"status": "ok", "summary": results.summary, "instances": results.instance_summaries}
    except BaseException as exc:
        if not is_run_failure(exc):
            raise
        out = failed(f"{type(exc).__name__}: {exc}".strip())
        out["traceback"] = traceback.format_exc(limit=20)
    finally:
        log.filters[:] = others
    out["wall_s"] = time.perf_counter() - start
    if held.messages:
        out["warnings"] = held.messages
    return out


# --- plug-ins registered in this process ------------------------------------------------

#: One registered plug-in: (registry, name, factory, latency ``inputs``). The registry is
#: ``"latency"`` or a policy kind of :data:`inference_sim.policies.REGISTRIES`.
PluginEntry = tuple[str, str, Any, str]


def _registered() -> list[PluginEntry]:
    """Every entry of the latency and policy registries, in a fixed order."""
    from inference_sim.latency.registry import latency_model_names, lookup_latency_model
    from inference_sim.policies import REGISTRIES

    entries: list[PluginEntry] = []
    for name in latency_model_names():
        entry = lookup_latency_model(name)
        entries.append(("latency", name, entry.factory, entry.inputs))
    for kind, registry in REGISTRIES.items():
        for name in registry.names():
            entries.append((kind, name, registry.lookup(name), ""))
    return entries


def _module(obj: Any) -> str:
    return str(getattr(obj, "__module__", None) or type(obj).__module__)


def _where(obj: Any) -> str:
    return f"{_module(obj)}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _own_closure(obj: Any) -> bool:
    """A factory of the package's own that only exists inside a function (the latency
    built-ins): every worker's import registers it, and stdlib pickle cannot send it."""
    return _module(obj).split(".")[0] == "inference_sim" and "<locals>" in getattr(
        obj, "__qualname__", ""
    )


def plugin_entries() -> tuple[list[PluginEntry], list[str]]:
    """The registered entries a worker process can import, pickled one by one, and a
    description of each one it cannot (a class of ``__main__`` without a file behind it,
    as in ``python -c`` or a notebook, or one that does not pickle). The package's own
    entries go too when they pickle (classes: by name, the worker's own object); those
    that do not (closures) are registered by the worker's import anyway."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    top: set[str] | None = None
    carried: list[PluginEntry] = []
    stuck: list[str] = []
    for kind, name, factory, inputs in _registered():
        if _own_closure(factory):
            continue
        if _module(factory) == "__main__":
            if main_file is None:
                stuck.append(f"{kind} {name!r} ({_where(factory)}, of an interactive session)")
                continue
            if top is None:
                top = _script_names(main_file)
            head = str(getattr(factory, "__qualname__", "")).split(".")[0]
            if "*" not in top and head not in top:
                guard = '`if __name__ == "__main__":`'
                stuck.append(f"{kind} {name!r} ({_where(factory)}, defined under {guard})")
                continue
        try:
            data = pickle.dumps(factory)
        except Exception as exc:
            stuck.append(f"{kind} {name!r} ({_where(factory)}: {type(exc).__name__}: {exc})")
            continue
        carried.append((kind, name, data, inputs))
    return carried, stuck


def _script_names(path: str) -> set[str]:
    """Names the script at ``path`` binds when a worker imports it (as ``__mp_main__``):
    its top level, without the ``if __name__ == "__main__":`` block. ``{"*"}`` when
    that cannot be told (unreadable, a star import): then the worker is left to try."""
    import ast

    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return {"*"}
    names: set[str] = set()

    def main_guard(test: ast.expr) -> bool:  # __name__ == "__main__"
        return (
            isinstance(test, ast.Compare)
            and isinstance(test.left, ast.Name)
            and test.left.id == "__name__"
            and isinstance(test.ops[0], ast.Eq)
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
        )

    def visit(body: Sequence[ast.stmt]) -> None:
        for st in body:
            if isinstance(st, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(st.name)
            elif isinstance(st, ast.Import | ast.ImportFrom):
                names.update((a.asname or a.name).split(".")[0] for a in st.names)
            elif isinstance(st, ast.Assign | ast.AnnAssign | ast.AugAssign):
                targets = st.targets if isinstance(st, ast.Assign) else [st.target]
                for t in targets:
                    names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(st, ast.If):
                if not main_guard(st.test):
                    visit(st.body)
                visit(st.orelse)
            elif isinstance(st, ast.Try):
                visit(st.body)
                for handler in st.handlers:
                    visit(handler.body)
                visit(st.orelse)
                visit(st.finalbody)
            elif isinstance(st, ast.With | ast.For | ast.While):
                visit(st.body)

    visit(tree.body)
    return names


def install_plugins(entries: Sequence[PluginEntry]) -> None:
    """Register ``entries`` (from :func:`plugin_entries`; factories pickled or not) in this
    process. RuntimeError naming the entry when one cannot be imported here."""
    from inference_sim.latency.registry import register_latency_model
    from inference_sim.policies import REGISTRIES

    for kind, name, factory, inputs in entries:
        if isinstance(factory, bytes):
            try:
                factory = pickle.loads(factory)
            except Exception as exc:
                raise RuntimeError(
                    f"registered {kind} plug-in {name!r} cannot be imported in a worker "
                    f"process ({type(exc).__name__}: {exc}); define it at the top level of "
                    "a module or of the script, or use LocalBackend(jobs=1)"
                ) from None
        if kind == "latency":
            register_latency_model(name, factory, inputs=inputs)
        else:
            REGISTRIES[kind].register(name, factory)


def _with_plugins(func: Worker, item: Any, plugins: Sequence[PluginEntry]) -> Any:
    """``func(item)`` after registering ``plugins`` here (a worker process or Ray task)."""
    try:
        install_plugins(plugins)
    except RuntimeError as exc:
        return failed(str(exc))
    return func(item)


# --- local processes -------------------------------------------------------------------


def _child(func: Worker, item: Any, conn: Connection, plugins: Sequence[PluginEntry] = ()) -> None:
    try:
        result = _with_plugins(func, item, plugins)
    except BaseException as exc:  # pragma: no cover - func reports its own failures
        result = failed(f"{type(exc).__name__}: {exc}".strip())
    try:
        conn.send(result)
    finally:
        conn.close()


def _context() -> mp.context.BaseContext:
    # forkserver: children fork from a clean single-threaded server that has the
    # simulator imported, so a run starts in milliseconds and never inherits the
    # parent's threads (Ray, Arrow, ...). Elsewhere: spawn.
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["inference_sim.sweep.backends", "inference_sim.runner"])
        return ctx
    return mp.get_context("spawn")


#: Why a worker died, for a Python script (the usual cause: no ``__main__`` guard).
SCRIPT_DIED_HINT = (
    'from a Python script, run it under `if __name__ == "__main__":` (each worker '
    "imports the main module) or use LocalBackend(jobs=1)"
)
#: Why a worker died, for ``blis sweep``/``plan``/``tune`` (no script of the user's runs:
#: the guard advice meant nothing there).
CLI_DIED_HINT = (
    "a run ended its worker process: a plug-in calling os._exit, a crash, or the "
    "system killing it (out of memory: exit code -9); rerun with -j 1, which runs it "
    "in this process, to see its error"
)


class LocalBackend:
    """One process per run, at most ``jobs`` at once (``jobs=1``: in this process).

    ``died_hint`` follows "worker process died (exit code N)" in a dead worker's row:
    advice for a Python script by default; :func:`make_backend` (the commands' backend)
    gives the commands' own."""

    name = "local"

    def __init__(self, jobs: int | None = None, *, died_hint: str = SCRIPT_DIED_HINT) -> None:
        self.jobs = max(1, jobs if jobs else (os.cpu_count() or 1))
        self.died_hint = died_hint

    def map(self, func: Worker, items: Sequence[Any], on_result: ResultCallback) -> None:
        plugins: list[PluginEntry] = []
        in_process = self.jobs == 1
        if not in_process:
            plugins, stuck = plugin_entries()
            if stuck:
                log.warning(
                    "registered plug-in %s cannot be sent to worker processes: running "
                    "the %d runs in this process, one at a time; define it in a module "
                    "(or at the top level of a script) to run them in parallel",
                    "; ".join(stuck),
                    len(items),
                )
                in_process = True
        if in_process:
            for i, item in enumerate(items):
                try:
                    result = func(item)
                except BaseException as exc:  # pragma: no cover - func reports its own
                    if not is_run_failure(exc):
                        raise
                    result = failed(f"{type(exc).__name__}: {exc}".strip())
                on_result(i, relay_warnings(result))
            return
        ctx = _context()
        pending = deque(enumerate(items))
        active: dict[Connection, tuple[int, Any]] = {}
        try:
            while pending or active:
                while pending and len(active) < self.jobs:
                    i, item = pending.popleft()
                    reader, writer = ctx.Pipe(duplex=False)
                    proc = ctx.Process(
                        target=_child, args=(func, item, writer, plugins), daemon=True
                    )
                    proc.start()
                    writer.close()
                    active[reader] = (i, proc)
                for reader in wait(list(active)):
                    assert isinstance(reader, Connection)
                    i, proc = active.pop(reader)
                    try:
                        result = reader.recv()
                    except (EOFError, OSError):
                        proc.join()
                        result = failed(
                            f"worker process died (exit code {proc.exitcode}); {self.died_hint}"
                        )
                    reader.close()
                    proc.join()
                    on_result(i, relay_warnings(result))
        finally:
            for reader, (_i, proc) in active.items():
                proc.kill()
                proc.join()
                reader.close()

    def close(self) -> None:
        pass


# --- Ray -----------------------------------------------------------------------------


class RayBackend:
    """Runs as Ray tasks (one CPU each) on the cluster at ``address``.

    Without an address: the cluster already initialised in this process, else the one
    ``RAY_ADDRESS`` names, else a new local one (shut down by :meth:`close`).
    """

    name = "ray"

    def __init__(self, address: str | None = None, jobs: int | None = None) -> None:
        self.ray = require("ray", "ray", "--backend ray")
        self.owned = False
        if not self.ray.is_initialized():
            kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
            if address:
                kwargs["address"] = address
            elif jobs:
                kwargs["num_cpus"] = jobs
            if not address and not os.environ.get("RAY_ADDRESS"):
                kwargs["include_dashboard"] = False
            self.ray.init(**kwargs)
            self.owned = True
        self.jobs = jobs or int(self.ray.cluster_resources().get("CPU", 1))

    def map(self, func: Worker, items: Sequence[Any], on_result: ResultCallback) -> None:
        ray = self.ray
        # Ray pickles by value what a worker cannot import, so every registered entry
        # goes but the package's own closures (a worker's import registers those).
        plugins = [e for e in _registered() if not _own_closure(e[2])]
        remote = ray.remote(num_cpus=1, max_retries=0)(_with_plugins)
        shared = ray.put(plugins)
        refs = {remote.remote(func, item, shared): i for i, item in enumerate(items)}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                i = refs.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # worker died, task cancelled, ...
                    result = failed(f"Ray task failed: {type(exc).__name__}: {exc}")
                on_result(i, relay_warnings(result))

    def close(self) -> None:
        if self.owned:
            self.ray.shutdown()
            self.owned = False


def make_backend(name: str = "local", *, jobs: int | None = None, address: str | None = None):
    """``local`` or ``ray`` for the commands' ``--backend``; ValueError for anything else.

    A local backend made here words a dead worker for the command line
    (:data:`CLI_DIED_HINT`), not for a script."""
    if name == "local":
        return LocalBackend(jobs, died_hint=CLI_DIED_HINT)
    if name == "ray":
        return RayBackend(address, jobs)
    raise ValueError(f"--backend: unknown backend {name!r}; valid: local, ray")
