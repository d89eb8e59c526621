"""Review 23 (fidelity, item 5): figures quoted in docs/calibration.md's prose agree with the
generated sources they quote (calibrated.json, calibration-lomo.json, fidelity.json and
the fidelity assessment itself), so a refit that moves them fails here until the prose
follows."""

from __future__ import annotations

import json
import re
from pathlib import Path

from inference_sim.catalog.architecture import bundled_architecture
from inference_sim.latency.fidelity import assess, fidelity_table

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "calibration.md").read_text(encoding="utf-8")
SHIPPED = json.loads(
    (ROOT / "src" / "inference_sim" / "catalog" / "data" / "calibrated.json").read_text(
        encoding="utf-8"
    )
)
LOMO = json.loads((ROOT / "docs" / "calibration-lomo.json").read_text(encoding="utf-8"))
SCOUT = "redhatai/llama-4-scout-17b-16e-instruct-fp8-dynamic"


def _quoted(pattern: str) -> list[float]:
    found = re.search(pattern, " ".join(DOC.split()))
    assert found, pattern
    return [float(g) for g in found.groups()]


def test_l40s_example_matches_its_fidelity_record() -> None:
    model = "meta-llama/llama-3.1-8b-instruct"
    arch = bundled_architecture(model)
    assert arch is not None
    e = assess(model, arch, "L40S", 1)["expected_abs_error_pct"]
    quoted = _quoted(
        r"An L40S run of a seen-family dense model at TP 1 thus reads "
        r'"E2E ([\d.]+) %, TPOT ([\d.]+) %, TTFT ([\d.]+) %" \(worst ([\d.]+) / ([\d.]+) / '
        r"([\d.]+) %\)"
    )
    want = [e[k]["median"] for k in ("e2e", "tpot", "ttft")]
    want += [e[k]["max"] for k in ("e2e", "tpot", "ttft")]
    assert quoted == want


def test_reported_tpot_median_is_the_tables() -> None:
    (tpot,) = _quoted(r"Against the reported `itl_mean_ms` TPOT is ([\d.]+) %")
    assert tpot == round(LOMO["medians"]["LOMO"]["tpot_ape"], 1)


def test_scout_held_out_median_is_the_fidelity_tables() -> None:
    (median,) = _quoted(r"\*\*Llama-4-Scout held out\*\* \(E2E [^,]+, median ([\d.]+) %\)")
    assert median == fidelity_table()["errors"]["held_out_model"][SCOUT]["e2e"]["median"]


def test_shipped_moe_and_worker_us_are_quoted_as_fitted() -> None:
    (moe,) = _quoted(r"`moe` fell from 1\.105 to \*\*([\d.]+)\*\*")
    assert moe == round(SHIPPED["moe"], 3)
    (table_moe,) = _quoted(r"fitted ([\d.]+) since the MoE kernels are counted")
    assert table_moe == round(SHIPPED["moe"], 3)
    (worker,) = _quoted(r"it stays at its prior: ([\d.]+) µs in sample \(shipped set\)")
    assert worker == round(SHIPPED["worker_us"], 1)
