"""Where sweep runs execute: this machine's processes (default) or a Ray cluster.

A backend maps a module-level function over a list of items and reports each result
as it arrives; the function returns a dict with a ``status`` key ("ok" or "failed").
A run that raises is reported by the function itself; a worker that dies (killed,
out of memory) is reported by the backend as ``{"status": "failed", "error": ...}``.
Results do not depend on the backend, the number of workers or the order runs finish.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
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
    except Exception as exc:
        out = failed(f"{type(exc).__name__}: {exc}".strip())
        out["traceback"] = traceback.format_exc(limit=20)
    finally:
        log.filters[:] = others
    out["wall_s"] = time.perf_counter() - start
    if held.messages:
        out["warnings"] = held.messages
    return out


# --- local processes -------------------------------------------------------------------


def _child(func: Worker, item: Any, conn: Connection) -> None:
    try:
        result = func(item)
    except BaseException as exc:  # pragma: no cover - func reports its own failures
        result = failed(f"{type(exc).__name__}: {exc}")
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


class LocalBackend:
    """One process per run, at most ``jobs`` at once (``jobs=1``: in this process)."""

    name = "local"

    def __init__(self, jobs: int | None = None) -> None:
        self.jobs = max(1, jobs if jobs else (os.cpu_count() or 1))

    def map(self, func: Worker, items: Sequence[Any], on_result: ResultCallback) -> None:
        if self.jobs == 1:
            for i, item in enumerate(items):
                try:
                    result = func(item)
                except Exception as exc:  # pragma: no cover - func reports its own
                    result = failed(f"{type(exc).__name__}: {exc}")
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
                    proc = ctx.Process(target=_child, args=(func, item, writer), daemon=True)
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
                            f"worker process died (exit code {proc.exitcode}); from a Python "
                            'script, run it under `if __name__ == "__main__":` (each worker '
                            "imports the main module) or use LocalBackend(jobs=1)"
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
        remote = ray.remote(num_cpus=1, max_retries=0)(func)
        refs = {remote.remote(item): i for i, item in enumerate(items)}
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
    """``local`` or ``ray``; ValueError for anything else."""
    if name == "local":
        return LocalBackend(jobs)
    if name == "ray":
        return RayBackend(address, jobs)
    raise ValueError(f"--backend: unknown backend {name!r}; valid: local, ray")
