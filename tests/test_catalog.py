"""Tests for the bundled catalog and user defaults files.

Everything here uses only the package's own data and files written to
``tmp_path``, so the package is shown to be self-contained.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TypeVar

import pytest

from inference_sim.catalog import (
    Catalog,
    CatalogError,
    CoefficientSet,
    GpuSpec,
    ModelDefaults,
    WorkloadPreset,
    format_models_table,
    load_catalog,
    models_table,
)

LLAMA = "meta-llama/llama-3.1-8b-instruct"
V084 = "vllm/vllm-openai:v0.8.4"

T = TypeVar("T")


def found(value: T | None) -> T:
    """Unwrap an optional lookup result, failing the test if it is missing."""
    assert value is not None
    return value


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


# ------------------------------------------------------------- bundled data


def test_bundled_catalog_has_all_coefficient_sets(catalog: Catalog) -> None:
    assert len(catalog.coefficient_sets()) == 109
    assert len(catalog.model_ids()) == 29
    assert catalog.model_ids() == sorted(catalog.model_ids())


def test_bundled_catalog_is_cached() -> None:
    assert load_catalog() is load_catalog()


def test_llama_default_and_coefficients(catalog: Catalog) -> None:
    defaults = catalog.model_defaults(LLAMA)
    assert defaults == ModelDefaults(
        gpu="H100", tp=2, vllm_version=V084, hf_repo="meta-llama/Llama-3.1-8B-Instruct"
    )
    cs = catalog.find_coefficients(LLAMA, defaults.gpu, defaults.tp, defaults.vllm_version)
    assert cs == CoefficientSet(
        model=LLAMA,
        gpu="H100",
        tp=2,
        vllm_version=V084,
        alpha=(1601.350510688092, 3.512476196805965, 1805.5430360826988),
        beta=(6910.420479880494, 17.67057489844186, 2.8377471109943855),
        total_kv_blocks=132139,
    )


def test_model_lookup_is_case_insensitive(catalog: Catalog) -> None:
    mixed = "Meta-Llama/Llama-3.1-8B-Instruct"
    assert catalog.has_model(mixed)
    assert catalog.model_defaults(mixed) == catalog.model_defaults(LLAMA)
    assert catalog.find_coefficients(mixed, "H100", 2, V084) == catalog.find_coefficients(
        LLAMA, "H100", 2, V084
    )
    assert catalog.coefficient_sets(mixed) == catalog.coefficient_sets(LLAMA)


def test_lookup_misses_return_none(catalog: Catalog) -> None:
    assert catalog.find_coefficients(LLAMA, "H100", 3, V084) is None
    assert catalog.find_coefficients(LLAMA, "H100", 2, "vllm/vllm-openai:v0.0.0") is None
    assert catalog.find_coefficients("no/such-model", "H100", 2, V084) is None
    assert catalog.find_coefficients(LLAMA, "h100", 2, V084) is None  # GPU names are exact
    assert catalog.model_defaults("no/such-model") is None
    assert not catalog.has_model("no/such-model")


def test_model_without_default_is_still_listed(catalog: Catalog) -> None:
    mixtral = "mistralai/mixtral-8x7b-instruct-v0.1"
    assert catalog.has_model(mixtral)
    assert catalog.model_defaults(mixtral) is None
    assert catalog.coefficient_sets(mixtral)


def test_model_without_hf_repo_has_empty_string(catalog: Catalog) -> None:
    defaults = catalog.model_defaults("openai/gpt-oss-20b")
    assert defaults is not None
    assert defaults.hf_repo == ""
    assert defaults.vllm_version == "vllm/vllm-openai:v0.10.1.1"


def test_first_exact_match_wins_among_duplicates(catalog: Catalog) -> None:
    model = "redhatai/phi-4-fp8-dynamic"
    matches = [cs for cs in catalog.coefficient_sets(model) if (cs.gpu, cs.tp) == ("H100", 1)]
    assert len(matches) > 1
    assert catalog.find_coefficients(model, "H100", 1, V084) is matches[0]


def test_gpu_alias_lookup(catalog: Catalog) -> None:
    # Coefficients are recorded under "A100-80"; the hardware table says "A100-SXM".
    by_alias = catalog.find_coefficients(LLAMA, "A100-80", 1, V084)
    by_name = catalog.find_coefficients(LLAMA, "A100-SXM", 1, V084)
    assert by_alias is not None
    assert by_alias is by_name
    assert by_alias.gpu == "A100-80"
    assert catalog.gpu("A100-80") is catalog.gpu("A100-SXM")
    assert catalog.gpu_aliases("A100-SXM") == ["A100-80"]


def test_exact_gpu_spelling_preferred_over_alias() -> None:
    def cs(gpu: str, blocks: int) -> CoefficientSet:
        return CoefficientSet("m", gpu, 1, "v", (1.0, 2.0, 3.0), (4.0, 5.0, 6.0), blocks)

    spec = load_catalog().gpu("A100-SXM")
    cat = Catalog(
        coefficients=[cs("A100-80", 1), cs("A100-SXM", 2)],
        gpus={"A100-SXM": spec},
        gpu_aliases={"A100-SXM": ["A100-80"]},
    )
    assert found(cat.find_coefficients("m", "A100-SXM", 1, "v")).total_kv_blocks == 2
    assert found(cat.find_coefficients("m", "A100-80", 1, "v")).total_kv_blocks == 1


def test_gpu_specs(catalog: Catalog) -> None:
    assert catalog.gpu_names() == [
        "A100-40GB",
        "A100-SXM",
        "A10G",
        "B200",
        "H100",
        "H100-PCIe",
        "H200",
        "L4",
        "L40S",
        "MI300X",
    ]
    h100 = catalog.gpu("H100")
    assert isinstance(h100, GpuSpec)
    assert h100.name == "H100"
    assert h100.peak_tflops == pytest.approx(989.5)
    assert h100.peak_bandwidth_tbs == pytest.approx(3.35)
    assert h100.mfu_prefill == pytest.approx(0.65)
    assert h100.mfu_decode == pytest.approx(0.12)
    assert catalog.gpu("A100-SXM").peak_tflops == pytest.approx(312.0)


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("A100", "A100-SXM"),  # the 80 GB part when the size is not said
        ("A100-80GB", "A100-SXM"),
        ("A100-SXM4-40GB", "A100-40GB"),
        ("NVIDIA H100 PCIe", "H100-PCIe"),
        ("H100 80GB HBM2e", "H100-PCIe"),  # the memory type tells the cards apart
        ("A100 HBM2", "A100-40GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-SXM"),  # nvidia-smi
        ("a100_80gb", "A100-SXM"),
        ("NVIDIA H100 80GB HBM3", "H100"),  # nvidia-smi
        ("H100-SXM5", "H100"),
        ("nvidia l40s", "L40S"),
        ("L40S-48GB", "L40S"),
        ("AMD Instinct MI300X", "MI300X"),
        ("GB200", None),  # another chip: nothing resembles it
        ("A100X", None),
        ("H100 turbo", None),  # an unknown word: not a spelling of the H100
    ],
)
def test_gpu_names_as_people_and_tools_spell_them(
    catalog: Catalog, name: str, canonical: str | None
) -> None:
    assert catalog.match_gpu(name) == canonical


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("A100-20GB", "has 20 GB; the catalog's A100-SXM is the 80 GB part"),
        ("A100-PCIE-80GB", "is a PCIe card; the catalog's A100-SXM is the SXM part"),
        ("H100 NVL", "is an NVL card; the catalog's H100 is the SXM part"),
        ("L40S GDDR6X", "has GDDR6X memory; the catalog's L40S has GDDR6"),
    ],
)
def test_other_variants_of_a_known_chip_are_refused(
    catalog: Catalog, name: str, fragment: str
) -> None:
    with pytest.raises(CatalogError, match=re.escape(fragment)):
        catalog.match_gpu(name)


def test_cli_reads_a_spelling_as_the_catalog_gpu() -> None:
    from click.testing import CliRunner

    from inference_sim.cli.main import cli

    args = ["run", "--model", "meta-llama/llama-3.1-8b-instruct", "--latency-model",
            "calibrated", "--tp", "1", "--num-requests", "2", "--log", "info"]  # fmt: skip
    ok = CliRunner().invoke(cli, [*args, "--hardware", "NVIDIA A100-SXM4-80GB"])
    assert ok.exit_code == 0, ok.stderr
    assert "--hardware NVIDIA A100-SXM4-80GB: read as A100-SXM" in ok.stderr
    bad = CliRunner().invoke(cli, [*args[:-2], "--hardware", "H100 NVL"])
    assert bad.exit_code == 2
    assert bad.stderr.strip().startswith('Error: --hardware: "H100 NVL" is an NVL card')


def test_unknown_gpu_error_lists_known(catalog: Catalog) -> None:
    with pytest.raises(CatalogError, match=r'unknown GPU "X200"; known: A100-40GB, A100-SXM.*H100'):
        catalog.gpu("X200")


def test_presets(catalog: Catalog) -> None:
    assert catalog.preset_names() == ["chatbot", "contentgen", "multidoc", "summarization"]
    assert catalog.preset("chatbot") == WorkloadPreset(
        prefix_tokens=0,
        prompt_tokens=256,
        prompt_tokens_stdev=100,
        prompt_tokens_min=2,
        prompt_tokens_max=800,
        output_tokens=256,
        output_tokens_stdev=100,
        output_tokens_min=1,
        output_tokens_max=1024,
    )
    multidoc = catalog.preset("multidoc")
    assert multidoc.prefix_tokens == 0
    assert (multidoc.prompt_tokens, multidoc.output_tokens) == (10240, 1536)
    assert catalog.preset("ChatBot") == catalog.preset("chatbot")


def test_unknown_preset_error(catalog: Catalog) -> None:
    with pytest.raises(CatalogError) as info:
        catalog.preset("x")
    assert str(info.value) == (
        'unknown workload preset "x"; known: chatbot, contentgen, multidoc, summarization'
    )
    assert isinstance(info.value, ValueError)


def test_records_are_immutable(catalog: Catalog) -> None:
    cs = catalog.coefficient_sets()[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cs.tp = 99  # type: ignore[misc]
    listing = catalog.coefficient_sets()
    listing.clear()
    assert len(catalog.coefficient_sets()) == 109


# ------------------------------------------------------------------ listing


def test_models_table(catalog: Catalog) -> None:
    rows = models_table(catalog)
    keys = [(r["model"], r["gpu"], r["tp"], r["vllm_version"]) for r in rows]
    assert keys == sorted(keys)
    assert len(keys) == len(set(keys))  # shadowed duplicates are not listed
    assert {r["latency_modes"] for r in rows} == {
        "blackbox,roofline,calibrated",
        "roofline,calibrated",
    }
    llama_default = [r for r in rows if r["model"] == LLAMA and r["default"]]
    assert llama_default == [
        {
            "model": LLAMA,
            "gpu": "H100",
            "tp": 2,
            "vllm_version": V084,
            "latency_modes": "blackbox,roofline,calibrated",
            "total_kv_blocks": 66069,  # the data's 132139 counts both TP ranks
            "derived_kv_blocks": 64030,
            "default": True,
        }
    ]
    assert not any(r["default"] for r in rows if r["model"].startswith("mistralai/mixtral"))

    text = format_models_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == [
        "MODEL",
        "GPU",
        "TP",
        "VLLM_VERSION",
        "LATENCY_MODES",
        "TOTAL_KV_BLOCKS",
        "DERIVED_KV_BLOCKS",
        "DEFAULT",
    ]
    assert len(lines) == len(rows) + 1
    assert any(line.startswith(LLAMA) and "66069" in line for line in lines)


def test_format_models_table_empty() -> None:
    assert format_models_table([]).startswith("MODEL")


# --------------------------------------------------------- user defaults file

USER_YAML = """\
version: 0.0.2
defaults:
  Acme/Tiny-1B:
    GPU: H100
    tensor_parallelism: 1
    vllm_version: vllm/vllm-openai:v0.9.0
    hf_repo: Acme/Tiny-1B
  meta-llama/llama-3.1-8b-instruct:
    GPU: H100
    tensor_parallelism: 4
    vllm_version: vllm/vllm-openai:v0.8.4
workloads:
  chatbot:
    prompt_tokens: 128
    prompt_tokens_stdev: 10
    prompt_tokens_min: 1
    prompt_tokens_max: 200
    output_tokens: 64
    output_tokens_stdev: 5
    output_tokens_min: 1
    output_tokens_max: 100
models:
  - id: Acme/Tiny-1B
    GPU: H100
    tensor_parallelism: 1
    vllm_version: vllm/vllm-openai:v0.9.0
    alpha_coeffs: [1.5, 2, 3e-1]
    beta_coeffs: [4.0, 5.0, 6.0]
    total_kv_blocks: 1000
    best_loss: 12.5
  - id: meta-llama/llama-3.1-8b-instruct
    GPU: H100
    tensor_parallelism: 2
    vllm_version: vllm/vllm-openai:v0.8.4
    alpha_coeffs: [1.0, 1.0, 1.0]
    beta_coeffs: [2.0, 2.0, 2.0]
    total_kv_blocks: 7
"""


def write(tmp_path: Path, text: str, name: str = "defaults.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_user_file_extends_and_overrides(tmp_path: Path) -> None:
    merged = load_catalog(write(tmp_path, USER_YAML))

    # New model is added (ids lower-cased) ...
    assert merged.has_model("acme/tiny-1b")
    assert merged.model_defaults("ACME/tiny-1b") == ModelDefaults(
        gpu="H100", tp=1, vllm_version="vllm/vllm-openai:v0.9.0", hf_repo="Acme/Tiny-1B"
    )
    tiny = merged.find_coefficients("acme/tiny-1b", "H100", 1, "vllm/vllm-openai:v0.9.0")
    assert tiny is not None
    assert tiny.alpha == (1.5, 2.0, 0.3)
    assert tiny.total_kv_blocks == 1000
    assert len(merged.coefficient_sets()) == 111

    # ... its entries shadow bundled ones and its defaults/presets replace them ...
    assert found(merged.find_coefficients(LLAMA, "H100", 2, V084)).total_kv_blocks == 7
    assert found(merged.model_defaults(LLAMA)).tp == 4
    assert found(merged.model_defaults(LLAMA)).hf_repo == ""
    assert merged.preset("chatbot").prompt_tokens == 128
    assert merged.preset("chatbot").prefix_tokens == 0

    # ... while everything else is still there, and the cached bundle is untouched.
    assert merged.preset("multidoc") == load_catalog().preset("multidoc")
    assert merged.gpu("A100-80") == load_catalog().gpu("A100-SXM")
    assert found(load_catalog().find_coefficients(LLAMA, "H100", 2, V084)).total_kv_blocks == 132139
    assert not load_catalog().has_model("acme/tiny-1b")


def test_user_file_accepts_str_path_and_partial_sections(tmp_path: Path) -> None:
    path = write(tmp_path, "workloads: {}\n")
    merged = load_catalog(str(path))
    assert len(merged.coefficient_sets()) == 109


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("models: [\n", "malformed YAML"),
        ("defaults:\n  a: 1\n  a: 2\n", "duplicate key"),
        ("bogus: 1\n", 'unknown key "bogus"; allowed: defaults, models, version, workloads'),
        ("", "file is empty"),
        ("- 1\n", "expected a mapping"),
        ("models: {}\n", "models: expected a list"),
        (
            USER_YAML.replace("[1.5, 2, 3e-1]", "[1.5, 2]"),
            'models[0] (id "Acme/Tiny-1B").alpha_coeffs: expected a list of 3 numbers, got 2',
        ),
        (
            USER_YAML.replace("[4.0, 5.0, 6.0]", "[4.0, fast, 6.0]"),
            "beta_coeffs[1]: expected a number, got str 'fast'",
        ),
        (  # named in the file, not as a flag the user never gave
            USER_YAML.replace("[4.0, 5.0, 6.0]", "[4.0, 5.0, -6.0]"),
            'models[0] (id "Acme/Tiny-1B").beta_coeffs[2]: must be >= 0, got -6',
        ),
        (
            USER_YAML.replace("total_kv_blocks: 1000", "total_kv_blocks: lots"),
            "total_kv_blocks: expected an integer",
        ),
        (
            USER_YAML.replace(
                "tensor_parallelism: 1\n    vllm_version: vllm/vllm-openai:v0.9.0\n    hf_repo",
                "tensor_parallelism: 0\n    vllm_version: vllm/vllm-openai:v0.9.0\n    hf_repo",
            ),
            "defaults.Acme/Tiny-1B.tensor_parallelism: must be >= 1",
        ),
        (
            USER_YAML.replace("    best_loss: 12.5\n", "    colour: red\n"),
            'models[0]: unknown key "colour"; allowed: GPU, alpha_coeffs',
        ),
        (
            USER_YAML.replace("    prompt_tokens_stdev: 10\n", ""),
            "workloads.chatbot: missing required key: prompt_tokens_stdev",
        ),
        (
            USER_YAML.replace("prompt_tokens_min: 1", "prompt_tokens_min: 500"),
            "prompt_tokens_min: must be <= prompt_tokens_max",
        ),
        (
            "defaults:\n  x/y:\n    GPU: H100\n",
            "defaults.x/y: missing required keys: tensor_parallelism, vllm_version",
        ),
        ("version: [1]\n", "version: expected a version string"),
    ],
)
def test_invalid_user_file(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert fragment in message
    assert "\n" not in message


def test_missing_user_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(CatalogError, match="defaults file not found") as info:
        load_catalog(path)
    assert str(path) in str(info.value)


def test_directory_as_user_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="got a directory"):
        load_catalog(tmp_path)


def test_instance_kv_blocks_divides_the_rank_summed_count_by_tp(catalog: Catalog) -> None:
    """The data counts blocks over all TP ranks; one instance has 1/TP of that (vLLM)."""
    at = {tp: found(catalog.find_coefficients(LLAMA, "H100", tp, V084)) for tp in (1, 2, 4)}
    assert [at[tp].total_kv_blocks for tp in (1, 2, 4)] == [29205, 132139, 559190]
    assert [at[tp].instance_kv_blocks for tp in (1, 2, 4)] == [29205, 66069, 139797]
    # Per instance the count now tracks what GPU memory holds at every TP (derived:
    # 28186 / 64030 / 135719 at utilization 0.9), instead of growing 2-4x too fast.
    for tp, derived in ((1, 28186), (2, 64030), (4, 135719)):
        assert 1.0 < at[tp].instance_kv_blocks / derived < 1.05


def test_renamed_repositories_resolve_to_their_current_id() -> None:
    from inference_sim.catalog.architecture import renamed_model_id
    from inference_sim.config.resolve import resolve

    old = "meta-llama/Meta-Llama-3.1-8B-Instruct"
    assert renamed_model_id(old) == "meta-llama/llama-3.1-8b-instruct"
    assert (
        renamed_model_id("meta-llama/llama-3.1-8b-instruct") == "meta-llama/llama-3.1-8b-instruct"
    )
    assert renamed_model_id("meta-llama/meta-llama-3.1-1000b") == "meta-llama/meta-llama-3.1-1000b"
    plan = resolve({"model": old, "latency_model": "calibrated", "hardware": "H100", "tp": 1})
    assert plan.options["model"] == "meta-llama/llama-3.1-8b-instruct"


def test_gpu_spellings_with_a_custom_variant_of_a_catalog_chip(catalog: Catalog) -> None:
    """A --hardware-config variant (an H100 PCIe, an A100 40GB) next to the catalog's part:
    the words that tell them apart pick one; a bare spelling keeps the catalog's."""
    from dataclasses import replace as _replace

    gpus = {g: catalog.gpu(g) for g in catalog.gpu_names()}
    del gpus["H100-PCIe"], gpus["A100-40GB"]  # the bundled variants, added here by hand
    gpus["H100 PCIe"] = _replace(gpus["H100"], name="H100 PCIe", source="H100 PCIe 80GB")
    gpus["A100 40GB"] = _replace(gpus["A100-SXM"], name="A100 40GB", memory_gb=40.0)
    both = Catalog(gpus=gpus)
    assert both.match_gpu("NVIDIA H100 80GB HBM3") == "H100"
    assert both.match_gpu("NVIDIA H100 PCIe") == "H100 PCIe"
    assert both.match_gpu("h100-sxm5") == "H100"
    assert both.match_gpu("a100-40gb") == "A100 40GB"
    assert both.match_gpu("A100-SXM4-80GB") == "A100-SXM"


def test_a_hardware_config_path_says_nothing_about_the_card(catalog: Catalog) -> None:
    from dataclasses import replace as _replace

    gpus = {g: catalog.gpu(g) for g in catalog.gpu_names()}
    gpus["H100-94GB"] = _replace(
        gpus["H100"], name="H100-94GB", memory_gb=94.0,
        source="--hardware-config /boxes/pcie-nvl/hw.json",
    )  # fmt: skip
    assert Catalog(gpus=gpus).match_gpu("H100-SXM5-94GB") == "H100-94GB"


def test_a_deployment_listed_twice_with_other_coefficients_warns(tmp_path: Path, sim_log) -> None:
    """The reference's own defaults.yaml lists five deployments twice with different
    coefficients; the first entry is used (as the reference's lookup does), said once."""
    entry = USER_YAML[USER_YAML.index("  - id: Acme/Tiny-1B") : USER_YAML.index("  - id: meta")]
    load_catalog(write(tmp_path, USER_YAML + entry))  # the same entry again: nothing to say
    assert "listed twice" not in sim_log.text
    other = entry.replace("[4.0, 5.0, 6.0]", "[9.0, 9.0, 9.0]")
    merged = load_catalog(write(tmp_path, USER_YAML + other))
    assert "1 deployment(s) listed twice with other coefficients" in sim_log.text
    found = merged.find_coefficients("acme/tiny-1b", "H100", 1, "vllm/vllm-openai:v0.9.0")
    assert found is not None and found.beta == (4.0, 5.0, 6.0)  # the first entry
