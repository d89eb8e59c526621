"""Honest error bars (issue 19, item 5): every calibrated run says how far it is from the
training data and which error the leave-one-out tables give for that domain."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner

from inference_sim import simulate
from inference_sim.catalog.architecture import bundled_architecture
from inference_sim.cli.main import cli
from inference_sim.latency.fidelity import (
    assess,
    build_table,
    fidelity_table,
    log_line,
    model_family,
)

DOCS = Path(__file__).resolve().parent.parent / "docs"
QWEN = "qwen/qwen2.5-7b-instruct"
SMALL = {"num_requests": 6, "rate": 4.0, "prompt_tokens": 64, "output_tokens": 8}


def _arch(model: str):
    arch = bundled_architecture(model)
    assert arch is not None
    return arch


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("meta-llama/llama-3.1-8b-instruct", "llama-3"),
        ("redhatai/llama-3.3-70b-instruct-quantized.w8a8", "llama-3"),
        ("meta-llama/llama-2-7b-hf", "llama-2"),
        (QWEN, "qwen-2"),
        ("qwen/qwen3-30b-a3b", "qwen-3"),
        ("01-ai/yi-34b", "yi"),  # a size, not a version
        ("mistralai/mixtral-8x7b-instruct-v0.1", "mixtral"),
        ("mistralai/mistral-small-3.1-24b-instruct-2503", "mistral"),
        ("redhatai/phi-4-fp8-dynamic", "phi-4"),
    ],
)
def test_model_family(model: str, family: str) -> None:
    assert model_family(model) == family


def test_shipped_table_is_derived_from_the_docs_tables() -> None:
    lomo = json.loads((DOCS / "calibration-lomo.json").read_text(encoding="utf-8"))
    logo_path = DOCS / "calibration-logo.json"
    logo = json.loads(logo_path.read_text(encoding="utf-8")) if logo_path.is_file() else None
    assert build_table(lomo, logo) == fidelity_table()  # else: scripts/fidelity_table.py


def test_trained_model_on_the_training_gpu_gets_its_in_sample_errors() -> None:
    lomo = json.loads((DOCS / "calibration-lomo.json").read_text(encoding="utf-8"))
    rows = [r["e2e_ape"] for r in lomo["rows"]["in-sample"] if r["model"] == QWEN]
    fid = assess(QWEN, _arch(QWEN), "H100", 1)
    assert (fid["gpu_domain"], fid["model_seen"], fid["tp_seen"], fid["moe"]) == (
        "measured",
        "model",
        True,
        False,
    )
    assert fid["expected_abs_error_pct"]["e2e"]["median"] == round(statistics.median(rows), 1)
    assert fid["expected_abs_error_pct"]["e2e"]["rows"] == len(rows) == 2
    assert not fid["lower_bound"] and fid["caveats"] == []
    assert "in-sample" in fid["basis"]


def test_new_dense_model_gets_held_out_errors_at_its_tp() -> None:
    lomo = json.loads((DOCS / "calibration-lomo.json").read_text(encoding="utf-8"))
    moe = {"redhatai/llama-4-scout-17b-16e-instruct-fp8-dynamic"}
    tp1 = [r["e2e_ape"] for r in lomo["rows"]["LOMO"] if r["tp"] == 1 and r["model"] not in moe]
    fid = assess("qwen/qwen3-14b", _arch("qwen/qwen3-14b"), "H100", 1)
    assert fid["model_seen"] == "no" and fid["model_family"] == "qwen-3"
    assert fid["expected_abs_error_pct"]["e2e"]["median"] == round(statistics.median(tp1), 1)
    assert fid["expected_abs_error_pct"]["e2e"]["max"] == round(max(tp1), 1)
    assert "leave-one-model-out" in fid["basis"] and "TP 1" in fid["basis"]
    assert any("not in training" in c for c in fid["caveats"])
    # Same family, different model: "family".
    assert assess("qwen/qwen2.5-3b-instruct", _arch(QWEN), "H100", 1)["model_seen"] == "family"


def test_a_datasheet_gpu_adds_the_measured_datasheet_transfer_error() -> None:
    """A GPU without measurements is priced from its datasheet with the H100's
    efficiencies; the leave-one-GPU-out rows that did exactly that (A100 from H100 and H100
    from A100, datasheet figures) give the extra error to expect, added to the model's."""
    table = fidelity_table()
    transfer = table["datasheet_gpu"]
    logo = json.loads((DOCS / "calibration-logo.json").read_text(encoding="utf-8"))
    rows = [r for r in logo["step_logo"]
            if r["gpu_figures"] == "datasheet" and r["prediction"] == "ratio"]  # fmt: skip
    assert len(rows) == 2
    mean_decode = statistics.fmean(r["decode_ape"] for r in rows)
    assert transfer["step_error_pct"]["e2e"] == round(mean_decode, 1)
    assert transfer["step_error_max_pct"]["ttft"] == max(r["prefill_ape"] for r in rows)
    h200 = assess(QWEN, _arch(QWEN), "H200", 2)  # the H100's (measured) efficiencies
    h100 = assess(QWEN, _arch(QWEN), "H100", 2)
    assert h200["gpu_domain"] == "datasheet" and not h200["lower_bound"]
    for metric in ("e2e", "tpot", "ttft"):
        for key, part in (("median", "step_error_pct"), ("max", "step_error_max_pct")):
            want = h100["expected_abs_error_pct"][metric][key] + transfer[part][metric]
            assert h200["expected_abs_error_pct"][metric][key] == pytest.approx(want, abs=0.051)
    assert "datasheet with the other GPU's efficiencies" in h200["basis"]
    # A GPU priced with a profiled sibling's efficiencies (L40S, A100-40GB: the A100's)
    # is at least as uncertain as the sibling: per metric, the larger of the two errors.
    a100_step = table["gpus"]["A100-SXM"]["step_error_pct"]
    for gpu in ("L40S", "A100-40GB"):
        fid = assess(QWEN, _arch(QWEN), gpu, 2)
        assert fid["gpu_domain"] == "datasheet" and not fid["lower_bound"]
        assert any("A100-SXM's measured efficiencies" in c for c in fid["caveats"])
        assert "or of A100-SXM itself" in fid["basis"]
        for metric in ("e2e", "tpot", "ttft"):
            add = max(transfer["step_error_pct"][metric], a100_step[metric])
            want = h100["expected_abs_error_pct"][metric]["median"] + add
            got = fid["expected_abs_error_pct"][metric]["median"]
            assert got == pytest.approx(want, abs=0.051)
            a100 = assess(QWEN, _arch(QWEN), "A100-SXM", 2)["expected_abs_error_pct"][metric]
            assert got >= a100["median"]
    # Without the leave-one-GPU-out rows the figure is only a lower bound.
    bare = {**table, "datasheet_gpu": None}
    old = assess(QWEN, _arch(QWEN), "H200", 2, table=bare)
    assert old["lower_bound"] and old["expected_abs_error_pct"] == h100["expected_abs_error_pct"]


def test_a_gpu_of_a_generation_nobody_profiled_is_a_lower_bound() -> None:
    for gpu in ("MI300X", "B200"):
        fid = assess(QWEN, _arch(QWEN), gpu, 1)
        assert fid["lower_bound"]
        assert any("no profiled GPU runs its kernel generation" in c for c in fid["caveats"])


def test_an_unseen_tp_is_no_better_than_the_nearest_trained_tp() -> None:
    by_tp = fidelity_table()["errors"]["held_out_dense_by_tp"]
    tp8 = assess(QWEN, _arch(QWEN), "H100", 8)
    assert tp8["expected_abs_error_pct"]["e2e"]["median"] == by_tp["4"]["e2e"]["median"]
    tp3 = assess(QWEN, _arch(QWEN), "H100", 3)["expected_abs_error_pct"]
    for metric in ("e2e", "tpot", "ttft"):
        want = max(by_tp["2"][metric]["median"], by_tp["4"][metric]["median"])
        assert tp3[metric]["median"] == want


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        ("redhatai/qwen2.5-7b-instruct-quantized.w4a16", "4-bit"),
        ("redhatai/qwen2.5-7b-instruct-quantized.w8a8", "INT8 W8A8"),
        ("redhatai/qwen2.5-7b-instruct-fp8-dynamic", "FP8"),
    ],
)
def test_quantized_checkpoints_outside_training_are_a_lower_bound(model: str, kind: str) -> None:
    fid = assess(model, _arch(model), "H100", 1)
    assert fid["lower_bound"]
    assert any(c.startswith(f"{kind} weights") for c in fid["caveats"])
    scout = "redhatai/llama-4-scout-17b-16e-instruct-fp8-dynamic"  # the training model
    assert not any("weights (" in c for c in assess(scout, _arch(scout), "H100", 2)["caveats"])


def test_outside_the_domain_is_flagged_as_a_lower_bound() -> None:
    tp8 = assess(QWEN, _arch(QWEN), "H100", 8)
    assert not tp8["tp_seen"] and tp8["lower_bound"]
    assert "nearest trained TP (4)" in tp8["basis"]
    mix = "mistralai/mixtral-8x7b-instruct-v0.1"
    moe = assess(mix, _arch(mix), "H100", 2)
    assert moe["moe"] and "MoE model" in moe["basis"]
    assert moe["expected_abs_error_pct"] == fidelity_table()["errors"]["held_out_moe"]
    custom = assess(QWEN, _arch(QWEN), "H100", 1, shipped=False)
    assert "expected_abs_error_pct" not in custom
    assert "custom" in log_line(custom)


def test_calibrated_run_reports_fidelity_in_results_log_and_report(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    args = ["run", "--model", QWEN, "--latency-model", "calibrated", "--hardware", "L40S",
            "--tp", "2", "--num-requests", "6", "--results-path", str(path),
            "--log", "info"]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.stderr
    assert "fidelity: GPU L40S extrapolated" in res.stderr
    assert "expected |error| E2E" in res.stderr and "other GPU's efficiencies" in res.stderr
    assert "fidelity" not in res.stdout  # the stdout metrics block keeps the reference's keys
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["fidelity"] == assess(QWEN, _arch(QWEN), "L40S", 2)
    html = tmp_path / "r.html"
    rep = CliRunner().invoke(cli, ["report", str(path), "-o", str(html)])
    assert rep.exit_code == 0, rep.stderr
    page = html.read_text(encoding="utf-8")
    assert "<h2>Fidelity</h2>" in page and "L40S (datasheet)" in page


def test_only_calibrated_runs_carry_fidelity() -> None:
    blackbox = simulate(model="meta-llama/llama-3.1-8b-instruct", **SMALL)
    assert "fidelity" not in blackbox.summary
    roof = simulate(model=QWEN, roofline=True, hardware="H100", tp=1, **SMALL)
    assert "fidelity" not in roof.summary
    cal = simulate(model=QWEN, latency_model="calibrated", hardware="H100", tp=1, **SMALL)
    assert cal.summary["fidelity"]["gpu_domain"] == "measured"
    assert cal.to_dict()["fidelity"] == cal.summary["fidelity"]


def test_report_says_when_the_figures_are_a_lower_bound(tmp_path: Path) -> None:
    """TP 8 is outside the training TPs: the report flags the expected error as a bound."""
    path = tmp_path / "r.json"
    model = "meta-llama/llama-3.1-8b-instruct"
    args = ["run", "--model", model, "--latency-model", "calibrated", "--hardware", "H100",
            "--tp", "8", "--num-requests", "4", "--results-path", str(path)]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.stderr
    assert json.loads(path.read_text(encoding="utf-8"))["fidelity"]["lower_bound"]
    html = tmp_path / "r.html"
    rep = CliRunner().invoke(cli, ["report", str(path), "-o", str(html)])
    assert rep.exit_code == 0, rep.stderr
    assert "a lower bound" in html.read_text(encoding="utf-8")


LLAMA2 = "meta-llama/llama-2-7b-hf"  # in training at TP 1 on the H100
PD = {"num_instances": 2, "prefill_instances": 1, "decode_instances": 1}


def _fidelity(**kw: object) -> dict:
    base = {"model": LLAMA2, "latency_model": "calibrated", "hardware": "H100", "tp": 1}
    return simulate(**{**base, **SMALL, **kw}).summary["fidelity"]


def test_pd_pools_each_give_the_figures_they_decide() -> None:
    """A prefill pool on another GPU sets the TTFT figure (it used to describe the H100
    main deployment only); a pool on another latency model gives no figure at all."""
    plain = _fidelity()
    l40s = _fidelity(**PD, prefill_hardware="L40S")
    alone = assess(LLAMA2, _arch(LLAMA2), "L40S", 1)
    assert l40s["expected_abs_error_pct"]["ttft"] == alone["expected_abs_error_pct"]["ttft"]
    assert l40s["expected_abs_error_pct"]["tpot"] == plain["expected_abs_error_pct"]["tpot"]
    assert l40s["gpu"] == "L40S (prefill) / H100 (decode)" and l40s["gpu_domain"] == "datasheet"
    assert set(l40s["pools"]) == {"prefill", "decode"}
    roof = _fidelity(**PD, decode_latency_model="roofline")
    assert set(roof["expected_abs_error_pct"]) == {"ttft"} and roof["lower_bound"]
    assert any("decode pool runs the roofline model" in c for c in roof["caveats"])
    assert "TTFT" in log_line(roof) and "TPOT" not in log_line(roof)
    decode_only = simulate(
        model=LLAMA2, roofline=True, hardware="H100", tp=1, **PD,
        decode_latency_model="calibrated", **SMALL,
    ).summary["fidelity"]  # fmt: skip
    assert set(decode_only["expected_abs_error_pct"]) == {"tpot"}


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"quantization": "fp8"}, "online weight quantization"),
        ({"kv_cache_dtype": "fp8"}, "FP8 KV cache"),
        ({"kv_cpu_blocks": 1000}, "a CPU KV tier"),
        (
            {
                "prompt_tokens": 20_000,
                "prompt_tokens_stdev": 0,
                "prompt_tokens_max": 20_000,
                "max_model_len": 32_768,
            },
            "longer than any training context",
        ),
    ],
)
def test_features_outside_the_training_runs_make_a_lower_bound(kw: dict, needle: str) -> None:
    assert not _fidelity()["lower_bound"]
    fid = _fidelity(**kw)
    assert fid["lower_bound"] and any(needle in c for c in fid["caveats"])


def test_moe_models_off_the_trained_moe_tp_are_a_lower_bound() -> None:
    mix = "mistralai/mixtral-8x7b-instruct-v0.1"
    assert not assess(mix, _arch(mix), "H100", 2)["lower_bound"]
    at4 = assess(mix, _arch(mix), "H100", 4)
    assert at4["tp_seen"] and at4["lower_bound"]
    assert not any("8-13 %" in c for c in at4["caveats"])  # no longer the case (docs)
    # the lower bound says why (it had the same caveats as TP 2)
    assert any("TP 4: no MoE model was measured" in c for c in at4["caveats"])
