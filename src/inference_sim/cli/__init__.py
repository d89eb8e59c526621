"""The ``blis`` command line; the commands live in :mod:`inference_sim.cli.main`.

:func:`main` is the console entry point. Importing the commands takes a few hundred
milliseconds (numpy, click, the catalog); it happens here, under a guard, so a Ctrl-C
during start-up ends with one line and exit 130 instead of a traceback.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """``blis``: import the commands, then run them."""
    try:
        from inference_sim.cli.main import main as blis_main
    except KeyboardInterrupt:
        sys.stderr.write("Error: interrupted\n")
        raise SystemExit(130) from None
    blis_main(argv)
