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
    LayerOpsRow,
    fit_allreduce,
    fit_gemm_efficiency,
    fit_layer_ops,
    fit_token_ops,
    gemm_rows_from_csv,
    gemm_seconds,
    load_layer_ops,
    load_splitwise,
)
from inference_sim.catalog import load_catalog
from inference_sim.catalog.architecture import bundled_architecture
from inference_sim.latency.calibrated import (
    GPU_EFFICIENCY_PATH,
    NO_CORRECTION,
    CalibratedLatencyModel,
    GpuCorrection,
    clock_layer_factor,
    corrections_from_efficiency,
    gpu_correction,
    interconnect,
    kernel_family,
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
            t = 20e-6 + (size * 2 * (n - 1) / n / 300e9 if size > (1 << 20) else 0.0)
            rows.append(AllReduceRow("s", "G", n, float(size), t))
    fit = fit_allreduce(rows)
    assert fit.latency_us == pytest.approx(20.0)
    assert fit.bus_gbs == pytest.approx(300.0)


def test_allreduce_fit_keeps_each_tp_degree_as_measured() -> None:
    lat = {2: 10e-6, 4: 30e-6, 8: 25e-6}
    bus = {2: 400e9, 4: 300e9, 8: 200e9}
    rows = [
        AllReduceRow("s", "G", n, float(size), lat[n] + size * 2 * (n - 1) / n / bus[n])
        for n in (2, 4, 8)
        for size in (2048, 65536, 4 << 20, 16 << 20, 64 << 20)
    ]
    fit = fit_allreduce(rows)
    # Small messages (<= 1 MiB) carry a little transfer time on top of the latency.
    for n in (2, 4, 8):
        small = [r.seconds for r in rows if r.gpus == n and r.size_bytes <= 1 << 20]
        assert fit.per_tp[n][0] == pytest.approx(float(np.median(small)) * 1e6)
        assert fit.per_tp[n][0] == pytest.approx(lat[n] * 1e6, rel=0.05)
        assert fit.per_tp[n][1] == pytest.approx(bus[n] / 1e9, rel=0.02)
    assert fit.latency_us == pytest.approx(sorted(v[0] for v in fit.per_tp.values())[1])


def test_small_layer_operators_per_gpu(tmp_path: Path) -> None:
    ops = ("input_layernorm", "attn_rope", "post_attention_layernorm", "mlp_act", "add")
    cols = ["n_head", "n_kv_head", "n_embd", "n_expanded_embd", "num_tokens",
            "num_tensor_parallel_workers"]  # fmt: skip
    root = tmp_path / "vidur"
    for folder, ms in (("h100", 0.002), ("a100", 0.003)):
        d = root / "data" / "profiling" / "compute" / folder / "org" / "m"
        d.mkdir(parents=True)
        with (d / "mlp.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(cols + [f"time_stats.{op}.median" for op in ops])
            for tokens in (1, 32, 512):
                scale = 10.0 if tokens > 64 else 1.0  # prefill sizes are not fixed costs
                w.writerow([64, 8, 8192, 28672, tokens, 2] + [ms * scale] * len(ops))
            w.writerow([32, 8, 4096, 14336, 1, 1] + [1.0] * len(ops))  # another width
    rows = load_layer_ops(root)
    assert {r.gpu for r in rows} == {"H100", "A100-SXM"} and len(rows) == 8
    # five operators, the residual add twice: 6 x 2 µs on H100, 6 x 3 µs on A100
    h100 = fit_layer_ops([r for r in rows if r.gpu == "H100"])
    a100 = fit_layer_ops([r for r in rows if r.gpu == "A100-SXM"])
    assert (h100, a100) == (pytest.approx(12.0), pytest.approx(18.0))
    with pytest.raises(ValueError, match="hidden 1234"):
        fit_layer_ops(rows, hidden=1234)


def test_token_ops_separate_replicated_from_sharded_cost() -> None:
    """Norms and residual adds cost the same at any TP, rotary and activation shrink with
    it: the per-token fit recovers both from rows spanning TP degrees, and refuses rows at
    one TP (the two would be confounded) or too few tokens."""
    rep, shard, fixed = 0.09, 0.11, 7.0  # µs per token, µs per token at TP 1, µs
    rows = [
        LayerOpsRow("H100", "m", 8192, tp, n, (fixed + n * (rep + shard / tp)) * 1e-6)
        for tp in (1, 2, 4, 8)
        for n in (256, 1024, 4096)
    ]
    rows.append(LayerOpsRow("H100", "m", 8192, 1, 32, 1.0))  # decode size: left out
    rows.append(LayerOpsRow("H100", "m", 4096, 2, 1024, 1.0))  # another width: left out
    got = fit_token_ops(rows)
    assert got == (pytest.approx(rep), pytest.approx(shard))
    with pytest.raises(ValueError, match="two TP degrees"):
        fit_token_ops([r for r in rows if r.tp == 2])
    with pytest.raises(ValueError, match=">= 8192 tokens"):
        fit_token_ops(rows, min_tokens=8192)


def test_corrections_carry_the_measured_tp_dependence() -> None:
    eff = {
        "REF": {"bandwidth": 0.9, "compute": 0.7, "allreduce_latency_us": 40.0,
                "allreduce_bus_gbs": 400.0, "layer_ops_us": 20.0,
                "allreduce_by_tp": {"2": {"latency_us": 20.0, "bus_gbs": 300.0},
                                    "4": {"latency_us": 60.0, "bus_gbs": 500.0}}},
        "OTHER": {"bandwidth": 0.45, "compute": 0.7, "allreduce_latency_us": 80.0,
                  "allreduce_bus_gbs": 200.0, "layer_ops_us": 30.0,
                  "allreduce_by_tp": {"2": {"latency_us": 100.0, "bus_gbs": 150.0}}},
    }  # fmt: skip
    corr = corrections_from_efficiency(eff, "REF")
    assert corr["REF"].allreduce(2) == (0.5, 300.0) and corr["REF"].allreduce(4) == (1.5, 500.0)
    assert corr["REF"].allreduce(8) == (1.0, 0.0)  # unmeasured TP: TP-flat, datasheet link
    assert corr["REF"].layer == 1.0 and corr["REF"].bandwidth == 1.0
    other = corr["OTHER"]
    assert other.bandwidth == pytest.approx(0.5) and other.layer == pytest.approx(1.5)
    assert other.allreduce(2) == (pytest.approx(2.5), 150.0)
    # TP 4 was not measured on OTHER: its TP-flat ratios to the reference.
    link = interconnect("REF")[0]  # the reference GPU's datasheet link (unknown: default)
    assert other.allreduce(4) == (pytest.approx(2.0), pytest.approx(link * 200.0 / 400.0))
    # A GPU nobody profiled: the reference's latency shape over TP, its own datasheet link.
    star = corr["*"]
    assert not star.measured and star.bandwidth == 1.0 and star.layer == 1.0
    assert star.allreduce(4) == (1.5, 0.0) and star.allreduce(2) == (0.5, 0.0)


def test_allreduce_term_follows_the_tp_profile() -> None:
    cat = load_catalog()
    arch = bundled_architecture(QWEN)
    assert arch is not None
    corr = GpuCorrection(allreduce_tp=((2, 0.5, 100.0), (4, 2.0, 400.0)))
    c = CalibratedLatencyModel(arch, cat.gpu("H100"), 2).coefficients
    for tp, lat, gbs in ((2, 0.5, 100.0), (4, 2.0, 400.0)):
        m = CalibratedLatencyModel(arch, cat.gpu("H100"), tp, correction=corr)
        per_token = arch.hidden * 2.0 * 2.0 * (tp - 1) / tp
        want = 2 * arch.layers * (c.allreduce_us * lat + 10 * per_token / (gbs * 1e3))
        assert m.terms([], 10, 1000)["allreduce_us"] == pytest.approx(want)


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


def test_h100_is_priced_as_fitted_and_a100_by_its_measured_ratios() -> None:
    cat = load_catalog()
    arch = bundled_architecture(QWEN)
    assert arch is not None
    eff = json.loads(Path(GPU_EFFICIENCY_PATH).read_text(encoding="utf-8"))["gpus"]
    # The H100 keeps its datasheet figures; only the all-reduce follows its measured
    # latency and bus bandwidth at the TP degree.
    h100 = CalibratedLatencyModel(arch, cat.gpu("H100"), 2)
    h100_raw = CalibratedLatencyModel(arch, cat.gpu("H100"), 2, correction=NO_CORRECTION)
    measured_tp2 = eff["H100"]["allreduce_by_tp"]["2"]
    assert h100.shape.link_bw == pytest.approx(measured_tp2["bus_gbs"] * 1e9)
    for prefill, count, ctx in (([], 8, 8000), ([(0, 2048)], 0, 0), ([(100, 300)], 16, 9000)):
        t, t_raw = h100.terms(prefill, count, ctx), h100_raw.terms(prefill, count, ctx)
        for key in t:
            if key not in ("allreduce_us", "total_us"):
                assert t[key] == t_raw[key], key
    corr = gpu_correction("A100-SXM")
    assert corr.measured and corr.bandwidth == pytest.approx(
        eff["A100-SXM"]["bandwidth"] / eff["H100"]["bandwidth"]
    )
    assert corr.layer == pytest.approx(
        eff["A100-SXM"]["layer_ops_us"] / eff["H100"]["layer_ops_us"]
    )
    a100 = CalibratedLatencyModel(arch, cat.gpu("A100-SXM"), 2)
    a100_raw = CalibratedLatencyModel(arch, cat.gpu("A100-SXM"), 2, correction=NO_CORRECTION)
    w, w_raw = a100.terms([], 8, 8000), a100_raw.terms([], 8, 8000)
    assert w["weights_us"] == pytest.approx(w_raw["weights_us"] / corr.bandwidth)
    assert w["kv_us"] == pytest.approx(w_raw["kv_us"] / corr.bandwidth)
    assert w["layers_us"] == pytest.approx(w_raw["layers_us"] * corr.layer)
    assert w["total_us"] > w_raw["total_us"]  # A100 reaches less of its datasheet bandwidth
    # GPUs nobody profiled keep their datasheet figures and the H100's all-reduce latency
    # over TP; they borrow the efficiencies of the profiled GPU that runs their kernels
    # (Ada runs the A100's sm80-class kernels) and scale small kernels by the boost clock.
    l40s = gpu_correction("L40S")
    assert not l40s.measured
    assert (l40s.bandwidth, l40s.compute) == (corr.bandwidth, corr.compute)
    assert l40s.layer == pytest.approx(corr.layer * 1410 / 2520)  # the A100's, by clocks
    assert "A100-SXM" in l40s.source and "sm80" in l40s.source
    h200 = gpu_correction("H200")  # Hopper: the H100's own figures, borrowed
    assert (h200.bandwidth, h200.compute, h200.layer) == (1.0, 1.0, 1.0)
    assert h200.source == (  # the same NVLink as the H100: its measured all-reduce too
        "datasheet with H100's measured efficiencies (sm90 kernels) and all-reduce"
    )
    assert h200.allreduce(2) == gpu_correction("H100").allreduce(2)
    a40 = gpu_correction("A100-40GB")  # the A100's die, clock and links
    assert (a40.bandwidth, a40.layer, a40.allreduce(4)) == (
        corr.bandwidth, corr.layer, corr.allreduce(4)
    )  # fmt: skip
    assert not a40.measured and gpu_correction("L40S").allreduce(2)[1] == 0.0  # PCIe
    b200 = gpu_correction("B200")  # no profiled GPU of its generation, no trusted clock
    assert (b200.bandwidth, b200.compute, b200.layer) == (1.0, 1.0, 1.0)
    assert "measured" not in b200.source
    h100_tp4 = eff["H100"]["allreduce_by_tp"]["4"]["latency_us"]
    assert l40s.allreduce(4) == (
        pytest.approx(h100_tp4 / eff["H100"]["allreduce_latency_us"]),
        0.0,
    )


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
        for key in ("bandwidth", "compute", "allreduce_latency_us", "allreduce_bus_gbs",
                    "layer_ops_us"):  # fmt: skip
            assert doc["efficiency"][gpu][key] == pytest.approx(shipped[gpu][key], rel=1e-3)
        assert doc["efficiency"][gpu]["allreduce_by_tp"] == shipped[gpu]["allreduce_by_tp"]
    # The A100 reaches a smaller share of its datasheet bandwidth than the H100.
    assert doc["efficiency"]["A100-SXM"]["bandwidth"] < doc["efficiency"]["H100"]["bandwidth"]
    kinds = {(r["target"], r["gpu_figures"], r["prediction"]) for r in doc["step_logo"]}
    assert ("A100-SXM", "measured", "ratio") in kinds and ("H100", "datasheet", "direct") in kinds
    block = (docs / "calibration-lomo.md").read_text(encoding="utf-8")
    assert block.count("<!-- logo:begin -->") == 1 and "## Leave one GPU out" in block
    assert np.isfinite([r["decode_ape"] for r in doc["step_logo"]]).all()
    # Every structure check ran both ways in both modes, and the measured small-op cost
    # it prices is the one Vidur's rows give (replicated + sharded, per token and layer).
    checks = doc["structure_checks"]
    assert len(checks) == 4 * 2 * 2 and "**Other structures, checked**" in block
    fitted = [r for r in checks if r["variant"] == "small ops per token, fitted"]
    assert all(r["fitted"]["passes_measured"] > 1 for r in fitted)


def test_boost_clock_rule_predicts_the_measured_small_kernel_ratio() -> None:
    """The rule unprofiled GPUs get (small kernels scale with the inverse boost clock) is
    checked where it can be: the A100's small kernels, measured against the H100's."""
    eff = json.loads(Path(GPU_EFFICIENCY_PATH).read_text(encoding="utf-8"))["gpus"]
    measured = eff["A100-SXM"]["layer_ops_us"] / eff["H100"]["layer_ops_us"]
    assert clock_layer_factor("A100-SXM") == pytest.approx(measured, rel=0.05)
    assert clock_layer_factor("H100") == 1.0
    assert clock_layer_factor("B200") == 1.0  # no clock figure: no scaling
    assert kernel_family("L40S") == kernel_family("A100-SXM") != kernel_family("H100")
