"""The docs name every flag the CLI accepts, so they cannot silently drift."""

from __future__ import annotations

from pathlib import Path

from inference_sim.config.options import OPTIONS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_cli_doc_lists_every_flag_and_alias():
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for spec in OPTIONS:
        assert f"`{spec.flag}`" in text, spec.flag
        for alias in spec.alias_flags:
            assert f"`{alias}`" in text, alias


def test_readme_has_the_two_quick_start_commands():
    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    assert "pip install . && blis run --model meta-llama/llama-3.1-8b-instruct" in readme
    assert "pip install -e '.[test]' && python -m pytest" in readme
    ci = (DOCS.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install -e '.[test]' && python -m pytest" in ci
