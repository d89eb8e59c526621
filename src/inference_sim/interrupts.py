"""Ctrl-C and SIGTERM during ``blis run``: one signal never loses a run (issue 21, item 4).

:class:`RunSignals` is installed for the whole of ``blis run``. What a signal does
depends on the phase the command is in:

* **start-up** (options, files, catalog; before :meth:`RunSignals.start_run`): nothing
  to keep yet, so the first signal ends the command at once (exit 130 for SIGINT, 143
  for SIGTERM), with no results and no traceback;
* **the run** (building the workload and the cluster, simulating, collecting the
  results, writing every output file): the first signal only *asks* the simulation to
  stop (it stops between two events, or has already finished); the command then writes
  complete results — partial ones marked ``"interrupted": true`` if the simulation had
  not finished — and exits 130 / 143;
* a **second** signal, in any phase, abandons at once: whatever file is being written is
  dropped (its temporary file removed, an older file left as it was). Later signals are
  ignored so that clean-up runs to the end.

SIGTERM is what ``timeout``, ``kill`` and container runtimes send; it is treated as
Ctrl-C. A signal that was ignored when the command started (``nohup``, ``cmd &`` in a
non-interactive shell) stays ignored.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

#: The signals a run treats as "stop, but keep what you have".
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Abandoned(KeyboardInterrupt):
    """Raised by the handler to end the command now (start-up, or a second signal).

    A KeyboardInterrupt, so ``except Exception`` never swallows it and every
    ``except BaseException`` clean-up (temporary files) runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def exit_code_for(exc: BaseException) -> int:
    """128 + the signal: 130 for Ctrl-C (a plain KeyboardInterrupt), 143 for SIGTERM."""
    return exc.exit_code if isinstance(exc, Abandoned) else 128 + signal.SIGINT


def signal_name(signum: int) -> str:
    return "terminated" if signum == signal.SIGTERM else "interrupted"


class RunSignals:
    """SIGINT/SIGTERM handlers for one run; a context manager (main thread only).

    ``received`` lists the signals seen so far. :meth:`attach` names the simulator a
    first signal asks to stop (``stop_requested``); a signal seen before the simulator
    exists is passed on when it is attached."""

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self.received: list[int] = []
        self.running = False
        self._sim: Any = None
        self._abandoned = False
        self._previous: dict[int, Any] = {}

    # --- phases -----------------------------------------------------------------------
    def start_run(self) -> None:
        """From now on a first signal is kept for the end (results are written)."""
        self.running = True

    def attach(self, sim: Any) -> None:
        """``sim.stop_requested`` is set by the first signal (now, if it came already)."""
        self._sim = sim
        if self.received:
            sim.stop_requested = True

    @property
    def interrupted(self) -> bool:
        return bool(self.received)

    @property
    def exit_code(self) -> int:
        """128 + the first signal received (0 when none was)."""
        return 128 + self.received[0] if self.received else 0

    @property
    def first_name(self) -> str:
        return signal_name(self.received[0]) if self.received else ""

    # --- the handler --------------------------------------------------------------------
    def handle(self, signum: int, frame: FrameType | None = None) -> None:
        """The signal handler (public so tests can drive it without sending signals)."""
        if self._abandoned:
            return  # clean-up in progress: let it finish
        self.received.append(signum)
        if not self.running or len(self.received) > 1:
            self._abandoned = True
            raise Abandoned(self.received[0] if self.running else signum)
        if self._sim is not None:
            self._sim.stop_requested = True

    # --- installation ---------------------------------------------------------------------
    def __enter__(self) -> RunSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # handlers can only be set from the main thread
        for sig in self.signals:
            previous = signal.getsignal(sig)
            if previous is signal.SIG_IGN:
                continue  # ignored by whoever started us: keep ignoring it
            self._previous[sig] = previous
            signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            if previous is None:  # not set from Python: Python's own is the best guess
                previous = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, previous)
        self._previous.clear()
