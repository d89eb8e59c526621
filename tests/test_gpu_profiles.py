"""Per-GPU efficiencies (issue 19, items 1 and 2): the fits, the calibrated model's use of
them, and the leave-one-GPU-out script on the real profiles when they are present."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference_sim.calibrate.gpu_profiles import (
    AllReduceRow,
    GemmRow,
    fit_allreduce,
    fit_gemm_efficiency,
    gemm_rows_from_csv,
    gemm_seconds,
    load_splitwise,
)
from inference_sim.catalog import load_catalog
from inference_sim.catalog.architecture import bundled_architecture
from inference_sim.latency.calibrated import (
    GPU_EFFICIENCY_PATH,
    NO_CORRECTION,
    CalibratedLatencyModel,
    gpu_correction,
)

REPO = Path(__file__).resolve().parent.parent
QWEN = "qwen/qwen2.5-7b-instruct"
H100_PEAKS = (989.5e12, 3.35e12)


def _shared_calibration() -> Path | None:
    """``../shared/calibration`` next to the checkout (or $INFERENCE_SIM_SHARED)."""
    here = Path(__file__).resolve()
    candidates = [p / "shared" for p in here.parents[1:4]]
    if os.environ.get("INFERENCE_SIM_SHARED"):
        candidates.insert(0, Path(os.environ["INFERENCE_SIM_SHARED"]))
    for cand in candidates:
        if (cand / "calibration" / "vidur-profiling" / "data").is_dir():
            return cand / "calibration"
    return None


SHARED = _shared_calibration()


def _synthetic_rows(bandwidth: float, compute: float, launch_us: float) -> list[GemmRow]:
    rows = []
    for m in (1, 4, 16, 64, 256, 1024, 4096, 8192):
        for k, n in ((4096, 6144), (4096, 4096), (4096, 28672), (14336, 4096)):
            rows.append(
                GemmRow("X", "m", 1, m, "op", 2.0 * m * k * n, 2.0 * (k * n + m * k + m * n), 0.0)
            )
    t = gemm_seconds(rows, bandwidth, compute, launch_us, *H100_PEAKS)
    return [
        GemmRow(r.gpu, r.model, r.tp, r.tokens, r.op, r.flops, r.bytes, float(s))
        for r, s in zip(rows, t, strict=True)
    ]


def test_gemm_fit_recovers_known_efficiencies() -> None:
    pytest.importorskip("scipy")
    fit = fit_gemm_efficiency(_synthetic_rows(0.8, 0.6, 7.0), *H100_PEAKS)
    assert fit.bandwidth == pytest.approx(0.8, rel=1e-3)
    assert fit.compute == pytest.approx(0.6, rel=1e-3)
    assert fit.launch_us == pytest.approx(7.0, abs=0.05)
    assert fit.median_ape_pct < 0.1


def test_vidur_csv_rows_become_gemm_shapes(tmp_path: Path) -> None:
    cols = ["n_head", "n_kv_head", "n_embd", "n_expanded_embd", "use_gated_mlp", "num_tokens",
            "num_tensor_parallel_workers"]  # fmt: skip
    ops = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
    path = tmp_path / "mlp.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(cols + [f"time_stats.{op}.median" for op in ops])
        w.writerow([32, 8, 4096, 14336, "True", 8, 2, 0.02, 0.01, 0.05, 0.04])
    rows = {r.op: r for r in gemm_rows_from_csv(path, "A100-SXM", "llama")}
    qkv = rows["attn_pre_proj"]  # K 4096 -> N (32 + 16) x 128 / 2 = 3072
    assert qkv.flops == 2 * 8 * 4096 * 3072
    assert qkv.bytes == 2 * (4096 * 3072 + 8 * 4096 + 8 * 3072)
    assert qkv.seconds == pytest.approx(2e-5) and qkv.tp == 2
    assert rows["mlp_up_proj"].flops == 2 * 8 * 4096 * 14336  # gated: 2 x 14336 / TP 2
    assert rows["mlp_down_proj"].flops == 2 * 8 * 7168 * 4096


def test_allreduce_fit_recovers_latency_and_bus_bandwidth() -> None:
    rows = []
    for n in (2, 4, 8):
        for size in (2048, 16384, 65536, 1 << 20, 4 << 20, 16 << 20, 64 << 20):
            t = 20e-6 + (size * 2 * (n - 1) / n / 300e9 if size > 65536 else 0.0)
            rows.append(AllReduceRow("s", "G", n, float(size), t))
    fit = fit_allreduce(rows)
    assert fit.latency_us == pytest.approx(20.0)
    assert fit.bus_gbs == pytest.approx(300.0)


def test_splitwise_rows_are_medians_without_the_power_capped_runs(tmp_path: Path) -> None:
    path = tmp_path / "perf_model.csv"
    head = "model,hardware,prompt_size,batch_size,token_size,prompt_time,token_time,tensor_parallel"
    lines = [head]
    for t in (10.0, 12.0, 30.0):
        lines.append(f"llama2-70b,a100-80gb,512,1,128,{t},{t / 10},4")
    lines.append("llama2-70b,h100-80gb-pcap,512,1,128,5.0,0.5,4")
    lines.append("bloom-176b,h100-80gb,512,1,128,5.0,0.5,8")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = load_splitwise(path)
    assert len(rows) == 1
    assert (rows[0].gpu, rows[0].tp, rows[0].prompt_ms, rows[0].token_ms) == (
        "A100-SXM",
        4,
        12.0,
        1.2,
    )


def test_h100_is_priced_exactly_as_fitted_and_a100_by_its_measured_ratios() -> None:
    cat = load_catalog()
    arch = bundled_architecture(QWEN)
    assert arch is not None
    h100 = CalibratedLatencyModel(arch, cat.gpu("H100"), 2)
    h100_raw = CalibratedLatencyModel(arch, cat.gpu("H100"), 2, correction=NO_CORRECTION)
    for prefill, count, ctx in (([], 8, 8000), ([(0, 2048)], 0, 0), ([(100, 300)], 16, 9000)):
        assert h100.terms(prefill, count, ctx) == h100_raw.terms(prefill, count, ctx)
    eff = json.loads(Path(GPU_EFFICIENCY_PATH).read_text(encoding="utf-8"))["gpus"]
    corr = gpu_correction("A100-SXM")
    assert corr.measured and corr.bandwidth == pytest.approx(
        eff["A100-SXM"]["bandwidth"] / eff["H100"]["bandwidth"]
    )
    a100 = CalibratedLatencyModel(arch, cat.gpu("A100-SXM"), 2)
    a100_raw = CalibratedLatencyModel(arch, cat.gpu("A100-SXM"), 2, correction=NO_CORRECTION)
    w, w_raw = a100.terms([], 8, 8000), a100_raw.terms([], 8, 8000)
    assert w["weights_us"] == pytest.approx(w_raw["weights_us"] / corr.bandwidth)
    assert w["kv_us"] == pytest.approx(w_raw["kv_us"] / corr.bandwidth)
    assert w["total_us"] > w_raw["total_us"]  # A100 reaches less of its datasheet bandwidth
    # GPUs nobody profiled keep their datasheet figures.
    assert gpu_correction("L40S") is NO_CORRECTION


@pytest.mark.skipif(SHARED is None, reason="../shared/calibration (Vidur, Splitwise) not present")
def test_logo_script_reproduces_the_shipped_efficiencies(tmp_path: Path) -> None:
    pytest.importorskip("scipy")
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(REPO / "docs" / "calibration-lomo.md", docs / "calibration-lomo.md")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "calibration_logo.py"), str(SHARED),
         "--docs", str(docs)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    doc = json.loads((docs / "calibration-logo.json").read_text(encoding="utf-8"))
    shipped = json.loads(Path(GPU_EFFICIENCY_PATH).read_text(encoding="utf-8"))["gpus"]
    for gpu in ("H100", "A100-SXM"):
        for key in ("bandwidth", "compute", "allreduce_latency_us", "allreduce_bus_gbs"):
            assert doc["efficiency"][gpu][key] == pytest.approx(shipped[gpu][key], rel=1e-3)
    # The A100 reaches a smaller share of its datasheet bandwidth than the H100.
    assert doc["efficiency"]["A100-SXM"]["bandwidth"] < doc["efficiency"]["H100"]["bandwidth"]
    kinds = {(r["target"], r["gpu_figures"], r["prediction"]) for r in doc["step_logo"]}
    assert ("A100-SXM", "measured", "ratio") in kinds and ("H100", "datasheet", "direct") in kinds
    block = (docs / "calibration-lomo.md").read_text(encoding="utf-8")
    assert block.count("<!-- logo:begin -->") == 1 and "## Leave one GPU out" in block
    assert np.isfinite([r["decode_ape"] for r in doc["step_logo"]]).all()
