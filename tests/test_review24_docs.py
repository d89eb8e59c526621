"""Review 24 of the docs: the figures and messages they quote are the ones the code
gives today, and a workload spec's "has no effect" warnings are held back until the
workload checks pass (so a refused run prints its one error line alone)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from inference_sim.catalog import load_catalog, models_table
from inference_sim.cli.main import cli
from inference_sim.workload import parse_workload_spec

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LLAMA = "meta-llama/llama-3.1-8b-instruct"
TRAINING_RUNS = ROOT.parent / "shared" / "calibration" / "vllm-0.15.1" / "training_runs.csv"


def _doc(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _flat(text: str) -> str:
    """Markdown prose with its line breaks folded, so a phrase may span lines."""
    return re.sub(r"\s+", " ", text)


def _run(*args: str):
    return CliRunner().invoke(cli, ["run", *args])


def _summary(*args: str) -> dict:
    res = _run(*args, "--json")
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)


def _pattern(quoted: str) -> re.Pattern[str]:
    """A documented message as a regex: ``<placeholder>`` and ``...`` match anything."""
    out = re.escape(quoted)
    out = re.sub(r"<[^>]*>", ".+?", out.replace(r"\<", "<").replace(r"\>", ">"))
    out = out.replace(r"\.\.\.", ".*?")
    return re.compile(out)


# --- item 3: held-back spec warnings -----------------------------------------------------

SPEC = {
    "version": "2",
    "seed": 1,
    "aggregate_rate": 5,
    "clients": [
        {
            "id": "a",
            "rate_fraction": 1,
            "prefix_length": 40,
            "adapter_rank": 8,
            "arrival": {"process": "poisson", "cv": 2},
            "input_distribution": {"type": "constant", "params": {"value": 100}},
            "output_distribution": {"type": "constant", "params": {"value": 10}},
        }
    ],
}
HELD_BACK = (
    "clients[0].arrival.cv 2 has no effect with process poisson",
    "clients[0].prefix_length 40 has no effect without prefix_group",
    "clients[0].adapter_rank 8 has no effect without adapter",
)


def test_client_field_warnings_are_held_back_in_the_spec(sim_log):
    spec = parse_workload_spec(SPEC)
    assert [w.split(" (")[0] for w in spec.warnings] == list(HELD_BACK)
    assert sim_log.text == ""  # nothing logged while the spec loads


def test_a_refused_run_prints_its_error_line_alone(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(SPEC))  # no num_requests, no horizon: refused
    res = _run("--model", LLAMA, "--workload-spec", str(path))
    assert res.exit_code == 2
    assert res.stderr.splitlines() == [
        "Error: --workload-spec requires either num_requests (in YAML or --num-requests) or "
        "--horizon to bound generation"
    ]


def test_an_accepted_run_prints_the_warnings_with_the_file(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    res = _run("--model", LLAMA, "--workload-spec", str(path), "--num-requests", "5")
    assert res.exit_code == 0, res.stderr
    for text in HELD_BACK:
        assert f"WARNING workload spec {path}: {text}" in res.stderr
    assert res.stderr.count("has no effect") == 3  # once each


# --- items 1, 2, 8: KV block counts -------------------------------------------------------


def _blocks(*args: str) -> int:
    base = ("--model", LLAMA, "--hardware", "H100", "--tp", "1", "--num-requests", "2")
    return int(_summary(*base, *args)["total_kv_blocks"])


def test_engine_doc_block_counts():
    text = _flat(_doc("engine.md"))
    bf16 = _blocks("--latency-model", "calibrated")
    fp8_kv = _blocks("--latency-model", "calibrated", "--kv-cache-dtype", "fp8")
    fp8_w = _blocks("--latency-model", "calibrated", "--quantization", "fp8")
    assert (bf16, fp8_kv, fp8_w) == (28186, 56372, 31514)
    assert "this run has 56 372 blocks instead of 28 186" in text
    assert "31 514 blocks instead of the 28 186 derived for 16-bit weights" in text
    assert "the trained 29 205" not in text and "58 410 blocks instead" not in text
    # the quoted note is the blackbox (and roofline) runs' one; calibrated runs print none
    assert _blocks("--latency-model", "blackbox", "--kv-cache-dtype", "fp8") == 58410
    note = "--kv-cache-dtype fp8: the trained entry's 29205 blocks held 2-byte KV"
    assert note in text
    res = _run(
        "--model", LLAMA, "--hardware", "H100", "--tp", "1", "--num-requests", "2",
        "--latency-model", "calibrated", "--kv-cache-dtype", "fp8", "--log", "info",
    )  # fmt: skip
    assert res.exit_code == 0 and "the trained entry's 29205 blocks held" not in res.stderr


def test_catalog_doc_block_columns():
    text = _flat(_doc("catalog.md"))
    rows = {(r["model"], r["gpu"], r["tp"]): r for r in models_table(load_catalog(None))}
    mla = rows[("deepseek-ai/deepseek-v2-lite", "H100", 1)]
    assert mla["derived_kv_blocks"] == 21981 and "21 981" in text
    qwen = rows[("qwen/qwen2.5-7b-instruct", "H100", 1)]
    assert qwen["total_kv_blocks"] == 67659 and "67 659" in text
    calibrated = _summary(
        "--model", "qwen/qwen2.5-7b-instruct", "--hardware", "H100", "--tp", "1",
        "--latency-model", "calibrated", "--num-requests", "2",
    )["total_kv_blocks"]  # fmt: skip
    assert calibrated == 65329 and "65 329" in text
    assert "64 for MLA models on Hopper" in text


def test_calibration_doc_gpt_oss_blocks():
    text = _flat(_doc("calibration.md"))
    oss = ("--model", "openai/gpt-oss-20b", "--tp", "1", "--num-requests", "2")
    h100 = _summary(*oss, "--hardware", "H100", "--latency-model", "calibrated")
    h200 = _summary(*oss, "--hardware", "H200", "--latency-model", "calibrated")
    assert (h100["total_kv_blocks"], h200["total_kv_blocks"]) == (302690, 152704)
    assert "302 690 blocks" in text and "152 704 blocks" in text


@pytest.mark.skipif(not TRAINING_RUNS.is_file(), reason="no calibration measurements")
def test_calibration_doc_command_is_the_written_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["calibrate", str(TRAINING_RUNS), "--write-specs", "runs/"])
    assert res.exit_code == 0, res.stderr
    commands = (tmp_path / "runs" / "commands.sh").read_text(encoding="utf-8").splitlines()
    doc = _doc("calibration.md").split("A command looks like", 1)[1]
    shown = doc.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    args = shlex.split(shown)
    spec = args[args.index("--workload-spec") + 1]
    (written,) = [c for c in commands if f"--workload-spec {spec} " in c]
    assert shlex.split(written) == args


# --- item 5: data-parallel comparison ---------------------------------------------------


def test_cluster_doc_data_parallel_numbers():
    text = _flat(_doc("cluster.md"))
    base = (
        "--model", LLAMA, "--hardware", "H100", "--tp", "1", "--latency-model", "calibrated",
        "--num-instances", "2", "--workload", "chatbot", "--rate", "40",
        "--num-requests", "2000",
    )  # fmt: skip
    got = []
    for arrival in ((), ("--arrival", "poisson")):
        for policy in ("round-robin", "vllm-dp", "least-loaded"):
            s = _summary(*base, "--routing-policy", policy, *arrival)
            got.append(f"{s['ttft_mean_ms']:.1f} / {round(s['e2e_mean_ms']):,}".replace(",", " "))
    assert got == [
        "31.9 / 2 402", "31.9 / 2 399", "31.8 / 2 398",
        "32.9 / 2 393", "32.9 / 2 390", "33.8 / 2 393",
    ]  # fmt: skip
    assert "mean TTFT 31.9 ms and E2E 2 402 ms with `round-robin`, 31.9 / 2 399" in text
    assert "31.8 / 2 398 with `least-loaded`" in text
    assert "32.9 / 2 393, 32.9 / 2 390 and 33.8 / 2 393" in text


# --- item 6: policy bundle message --------------------------------------------------------


def test_policies_doc_unknown_key_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("bundle.yaml").write_text(
        "admission:\n  policy: always-admit\nrouting:\n  polcy: weighted\n", encoding="utf-8"
    )
    res = _run("--model", LLAMA, "--policy-config", "bundle.yaml", "--num-requests", "2")
    assert res.exit_code == 2
    (line,) = res.stderr.splitlines()
    assert line in _doc("policies.md").splitlines()


# --- item 7: examples table ---------------------------------------------------------------


def test_examples_readme_lists_every_example():
    text = (ROOT / "examples" / "README.md").read_text(encoding="utf-8")
    for path in sorted((ROOT / "examples").iterdir()):
        if path.name != "README.md" and path.suffix in (".py", ".yaml", ".ipynb"):
            assert f"| `{path.name}` |" in text, path.name


# --- item 4: troubleshooting rows ---------------------------------------------------------

SPEC_CLIENT = {
    "id": "a",
    "rate_fraction": 1,
    "arrival": {"process": "poisson"},
    "input_distribution": {"type": "constant", "params": {"value": 100}},
    "output_distribution": {"type": "constant", "params": {"value": 10}},
}


def _spec_file(tmp_path: Path, **top) -> str:
    doc = {"aggregate_rate": 5, "clients": [dict(SPEC_CLIENT)], **top}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return str(path)


def _results_file(tmp_path: Path) -> str:
    path = tmp_path / "r.json"
    res = _run(
        "--model", LLAMA, "--hardware", "H100", "--tp", "1", "--total-kv-blocks", "20000",
        "--num-requests", "2", "--results-path", str(path),
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    return str(path)


CASES = {
    "lost": (
        lambda tmp: ["--model", LLAMA, "--total-kv-blocks", "30", "--num-requests", "20"],
        "[cluster] <n> of <m> arrived requests (<x>%) were refused or dropped, so the results "
        "cover the rest only: <k> dropped_unservable (their KV needs more blocks than an "
        "instance has: raise --total-kv-blocks or shorten the requests)",
    ),
    "kv": (
        lambda tmp: [
            "--model", LLAMA, "--hardware", "H100", "--tp", "1", "--total-kv-blocks", "100000",
            "--num-requests", "2",
        ],
        "--total-kv-blocks <b> x <s> MiB per block = <g> GiB of KV cache per GPU, more than "
        "<gpu> leaves at TP=<n> for <model> (<x> GiB: ...; at most <k> blocks): vLLM (...) "
        "would run out of memory; the run uses <b> as given",
    ),
    "gmu": (
        lambda tmp: [
            "--model", LLAMA, "--hardware", "H100", "--tp", "1", "--latency-model",
            "calibrated", "--gpu-memory-utilization", "0.995", "--num-requests", "2",
        ],
        "--gpu-memory-utilization <v>: vLLM refuses to start above about 0.99: the CUDA "
        "context (and any other process) already holds part of the GPU's memory when it "
        "checks ...; the run goes on as asked",
    ),
    "mla": (
        lambda tmp: [
            "--model", "deepseek-ai/deepseek-v2-lite", "--hardware", "H100", "--tp", "1",
            "--block-size-in-tokens", "16", "--num-requests", "2",
        ],
        "--block-size-in-tokens 16: vLLM would run <model> on H100 with 64-token blocks "
        "(its FlashMLA backend takes multiples of 64 only); the run uses 16 as given",
    ),
    "config": (
        lambda tmp: ["--config", _results_file(tmp), "--tp", "2"],
        "--config <f>: the run's --total-kv-blocks <b> was given for its own deployment and "
        "is kept, though --tp 2 (recorded: 1) changes the KV cache's size; give "
        "--total-kv-blocks to set another",
    ),
    "aggregate_rate": (
        lambda tmp: [
            "--model", LLAMA, "--workload-spec",
            _spec_file(tmp, aggregate_rate=100, stages=[{"rate": 5, "duration": 20}]),
        ],
        "workload spec <f>: aggregate_rate <r> req/s is ignored: the stages set the load "
        "(<m> req/s on average over <d> s); the reference would run the whole workload at "
        "<r> req/s. Remove aggregate_rate or set it to <m>",
    ),
    "servegen": (
        lambda tmp: [
            "--model", LLAMA, "--num-requests", "2", "--workload-spec",
            _spec_file(tmp, servegen_data={"path": "/nonexistent"}),
        ],
        "servegen_data is ignored: the spec has clients, which set the load (aggregate_rate "
        "and their rate fractions)",
    ),
    "horizon": (
        lambda tmp: [
            "--model", LLAMA, "--workload-spec", _spec_file(tmp, horizon=-5),
        ],
        "workload spec <f>: horizon must be in [0, 9223372036854775807] µs (0: none; as "
        "--horizon), got <v>",
    ),
    "too_long": (
        lambda tmp: [
            "--model", LLAMA, "--workload-spec",
            _spec_file(
                tmp,
                num_requests=2,
                clients=[
                    {
                        **SPEC_CLIENT,
                        "prefix_group": "g",
                        "prefix_length": 10_000_000,
                        "input_distribution": {
                            "type": "constant", "params": {"value": 10_000_000},
                        },
                    }
                ],
            ),
        ],
        "client <c>: a request's prompt (prefix_length + input) must be <= 16777216 tokens "
        "(the longest request the simulator holds), got <v>; lower prefix_length or the "
        "input lengths",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_troubleshooting_quotes_the_message(case, tmp_path):
    args, quoted = CASES[case]
    assert f"`{quoted}`" in _doc("troubleshooting.md"), "not quoted in docs/troubleshooting.md"
    res = _run(*args(tmp_path))
    assert _pattern(quoted).search(res.stderr), res.stderr


def test_troubleshooting_quotes_the_client_field_warnings(tmp_path):
    text = _doc("troubleshooting.md")
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    res = _run("--model", LLAMA, "--workload-spec", str(path), "--num-requests", "2")
    for quoted in (
        "workload spec <f>: clients[<i>].prefix_length <n> has no effect without "
        "prefix_group (...)",
        "clients[<i>].adapter_rank <r> has no effect without adapter (the requests run on "
        "the base model)",
    ):
        assert quoted in text
        assert _pattern(quoted).search(res.stderr), res.stderr


def test_engine_md_horizon_cut_step_example(tmp_path: Path) -> None:
    """engine.md: a step that starts before the horizon runs whole (the reference's
    rule): its request completes past the horizon; the duration counts the step's start."""
    trace = tmp_path / "one.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,3\n")
    res = CliRunner().invoke(
        cli,
        [
            "run", "--model", "meta-llama/llama-3.1-8b-instruct", "--workload", "traces",
            "--workload-traces-filepath", str(trace), "--alpha-coeffs", "0,0,0",
            "--beta-coeffs", "1000,0,0", "--horizon", "2500us", "--json",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert (out["completed_requests"], out["still_running"]) == (1, 0)
    assert (out["e2e_mean_ms"], out["vllm_estimated_duration_s"]) == (3.0, 0.002)
    text = " ".join((Path(__file__).parent.parent / "docs" / "engine.md").read_text().split())
    assert "`--horizon 2500us` completes at 3 ms; the duration counts 2 ms" in text
