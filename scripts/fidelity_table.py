"""Regenerate the calibrated model's fidelity data from the validation tables.

Reads ``docs/calibration-lomo.json`` (leave-one-model-out, ``scripts/calibration_lomo.py``)
and, when present, ``docs/calibration-logo.json`` (leave-one-GPU-out,
``scripts/calibration_logo.py``), and writes
``src/inference_sim/catalog/data/fidelity.json``, which every calibrated-model run reads
to report how far it is from the training data and which error to expect
(``inference_sim.latency.fidelity``; docs/calibration.md, "How far to trust a run").

    PYTHONPATH=src python scripts/fidelity_table.py          # write the file
    PYTHONPATH=src python scripts/fidelity_table.py --check  # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from inference_sim.latency.fidelity import FIDELITY_PATH, build_table

ROOT = Path(__file__).resolve().parent.parent


def render() -> str:
    """The fidelity file's text, from the docs' JSON tables."""
    lomo = json.loads((ROOT / "docs" / "calibration-lomo.json").read_text(encoding="utf-8"))
    logo_path = ROOT / "docs" / "calibration-logo.json"
    logo = json.loads(logo_path.read_text(encoding="utf-8")) if logo_path.is_file() else None
    return json.dumps(build_table(lomo, logo), indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check the shipped file")
    args = ap.parse_args(argv)
    text = render()
    target = Path(FIDELITY_PATH)
    if args.check:
        same = target.is_file() and target.read_text(encoding="utf-8") == text
        print(f"{target}: {'up to date' if same else 'STALE: run scripts/fidelity_table.py'}")
        return 0 if same else 1
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
