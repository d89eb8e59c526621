"""Shared helpers of the fuzz and robustness tests (no tests here).

The contract every fuzz case checks (issue 11): a ``blis`` invocation either runs
(exit 0) or exits 2 with exactly one ``Error: ...`` line on stderr; never a traceback,
never an exit 1 (an internal failure), never a hang. Each invocation runs in process
through click's ``CliRunner`` under a wall-clock alarm (:func:`time_limit`), so a hang
fails the case instead of the suite.

Hypothesis settings: derandomized and without an example database, so CI is
reproducible and writes nothing; ``FUZZ_EXAMPLES=N`` raises the number of examples,
``FUZZ_RANDOM=1`` draws fresh random cases and ``FUZZ_LOG=FILE`` appends every
invocation and its input files to FILE (for a bug hunt).
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from inference_sim.cli.main import cli

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference-data"
REPO = Path(__file__).resolve().parent.parent
MODEL = "meta-llama/llama-3.1-8b-instruct"
# Small, fast runs: every fuzzed run is capped so a case costs milliseconds.
SMALL_RUN = ["run", "--model", MODEL, "--num-requests", "12", "--log", "error"]

#: A valid hardware config (the reference's field names), the seed of mutated inputs.
HARDWARE_SEED = {
    "H100": {
        "TFlopsPeak": 989.5,
        "BwPeakTBs": 3.35,
        "BwEffConstant": 0.72,
        "TOverheadMicros": 500.0,
        "perLayerOverhead": 20.0,
        "mfuPrefill": 0.65,
        "mfuDecode": 0.12,
        "allReduceLatency": 20.0,
        "MemoryGiB": 80,
    }
}


class Hang(BaseException):
    """Raised by :func:`time_limit`; a BaseException so no ``except Exception`` eats it."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail with :class:`Hang` when the block runs longer than ``seconds`` (wall clock)."""

    def _alarm(signum: int, frame: Any) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, _alarm)
    # Repeats every second after the first: an exception raised where Python cannot
    # propagate it (a garbage-collector callback, a __del__) is lost, the next is not.
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def fuzz_settings(examples: int, **kw: Any) -> settings:
    n = int(os.environ.get("FUZZ_EXAMPLES", examples))
    return settings(
        max_examples=n,
        deadline=None,  # time_limit bounds each invocation instead
        derandomize=not os.environ.get("FUZZ_RANDOM"),
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        **kw,
    )


def invoke(args: Sequence[str], *, seconds: float = 20.0) -> Result:
    """Run ``blis ARGS`` in process under a time limit; check the outcome contract."""
    args = [str(a) for a in args]
    if os.environ.get("FUZZ_LOG"):  # bug hunts: what ran last, should the process die
        with open(os.environ["FUZZ_LOG"], "a", encoding="utf-8") as fh:
            fh.write(f"blis {' '.join(args)}{_inputs(args)}\n")
    try:
        with time_limit(seconds):
            result = CliRunner().invoke(cli, args, catch_exceptions=True)
    except Hang:
        raise AssertionError(
            f"blis {' '.join(args)}: no answer within {seconds} s{_inputs(args)}"
        ) from None
    try:
        check_outcome(result, args)
    except AssertionError as exc:
        raise AssertionError(f"{exc}{_inputs(args)}") from None
    return result


def _inputs(args: Sequence[str]) -> str:
    """The fuzzed input files named in ``args`` (for a failure message)."""
    out = []
    for a in args:
        p = Path(a.split("=", 1)[-1])
        if "blis-fuzz-" in str(p) and p.is_file():
            out.append(f"\n--- {p.name} ---\n{p.read_text(errors='replace')[:3000]}")
    return "".join(out)


def check_outcome(result: Result, args: Sequence[str]) -> None:
    """Exit 0, or exit 2 with exactly one ``Error:`` line; no traceback, no crash."""
    shown = " ".join(args)
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        tb = "".join(traceback.format_exception(exc))
        raise AssertionError(f"blis {shown}: uncaught {type(exc).__name__}: {exc}\n{tb}")
    stderr = result.stderr
    assert "Traceback" not in stderr, f"blis {shown}: traceback on stderr:\n{stderr}"
    assert "Traceback" not in result.stdout, f"blis {shown}: traceback on stdout"
    assert result.exit_code in (0, 2), (
        f"blis {shown}: exit {result.exit_code} (expected 0 or 2); stderr:\n{stderr}"
    )
    if result.exit_code == 2:
        errors = [ln for ln in stderr.splitlines() if ln.startswith("Error: ")]
        assert len(errors) == 1, f"blis {shown}: expected one 'Error:' line, got:\n{stderr}"
        assert len(errors[0]) > len("Error: ") + 3, f"blis {shown}: empty error message"


# --- random values and document mutations ---------------------------------------------

SPECIAL_STRINGS = [
    "",
    " ",
    "0",
    "-1",
    "1e400",
    "nan",
    "inf",
    "-inf",
    "~",
    "null",
    "true",
    "yes",
    "[1, 2",
    "{a: b}",
    "\t",
    "é",
    "\x00",
    "a:b",
    "99999999999999999999999",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=5000),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-2.0, max_value=5000.0),
    st.sampled_from(SPECIAL_STRINGS),
    st.text(max_size=12),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.dictionaries(st.text(max_size=8), scalars, max_size=3),
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (tuple of keys/indices) to a node of ``doc``, the root included."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def _typo(draw: st.DrawFn, key: str) -> str:
    if not key:
        return "x"
    i = draw(st.integers(0, len(key) - 1))
    op = draw(st.sampled_from(["drop", "swap", "double", "upper", "suffix"]))
    if op == "drop" and len(key) > 1:
        return key[:i] + key[i + 1 :]
    if op == "swap" and len(key) > 1:
        j = min(i + 1, len(key) - 1)
        chars = list(key)
        chars[i], chars[j] = chars[j], chars[i]
        return "".join(chars) if "".join(chars) != key else key + "s"
    if op == "double":
        return key[:i] + key[i] + key[i:]
    if op == "upper":
        return key.upper() if key.upper() != key else key + "_x"
    return key + "_extra"


@st.composite
def mutated(draw: st.DrawFn, doc: Any, max_mutations: int = 3) -> Any:
    """``doc`` (a parsed YAML/JSON tree) with 1..max_mutations random changes."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, max_mutations))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        node = _get(doc, path)
        op = draw(st.sampled_from(["replace", "delete", "rename", "add", "wrap", "dup"]))
        if not path:
            if op == "replace":
                doc = draw(values)
            continue
        parent = _get(doc, path[:-1])
        key = path[-1]
        if op == "replace":
            parent[key] = draw(values)
        elif op == "delete":
            del parent[key]
        elif op == "rename" and isinstance(parent, dict):
            new = _typo(draw, str(key))
            parent[new] = parent.pop(key)
        elif op == "add" and isinstance(node, dict):
            node[draw(st.text(min_size=1, max_size=10))] = draw(values)
        elif op == "wrap":
            parent[key] = [node] if draw(st.booleans()) else {"value": node}
        elif op == "dup" and isinstance(parent, list):
            parent.append(copy.deepcopy(node))
    return doc


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> str:
    """``text`` with a few character-level edits (insert, delete, replace, truncate)."""
    for _ in range(draw(st.integers(1, 4))):
        if not text:
            text = draw(st.text(max_size=5))
            continue
        i = draw(st.integers(0, len(text) - 1))
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate", "dupline"]))
        ch = draw(st.sampled_from([":", "-", " ", "\n", "[", "{", '"', "'", "#", "&", "*", "9"]))
        if op == "insert":
            text = text[:i] + ch + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + 1 :]
        elif op == "replace":
            text = text[:i] + ch + text[i + 1 :]
        elif op == "truncate":
            text = text[:i]
        else:
            lines = text.splitlines(keepends=True)
            j = draw(st.integers(0, max(0, len(lines) - 1)))
            lines.insert(j, lines[j] if lines else "")
            text = "".join(lines)
    return text
