"""The in-memory catalog: lookups over models, coefficients, GPUs and presets.

The catalog is built once (see :mod:`inference_sim.catalog.loader`) and then
only read, so every method returns immutable records or fresh lists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from .errors import CatalogError
from .schema import CoefficientSet, GpuSpec, ModelDefaults, WorkloadPreset

__all__ = ["Catalog"]

#: Words of a GPU name that only say who made it.
_VENDOR_WORDS = frozenset({"nvidia", "amd", "instinct", "tesla", "geforce"})
#: A memory size: ``80gb``, ``80g`` or a bare ``80`` (as in ``A100-80``).
_MEMORY_WORD = re.compile(r"(\d+(?:\.\d+)?)(?:gb|g|gib)?")
#: Form-factor words and the form they say (``""``: says nothing about it).
_FORM_WORDS = {
    "sxm": "sxm",
    "sxm2": "sxm",
    "sxm4": "sxm",
    "sxm5": "sxm",
    "sxm6": "sxm",
    "hgx": "sxm",
    "dgx": "sxm",
    "pcie": "pcie",
    "nvl": "nvl",
    "oam": "",
}
_FORM_NAMES = {"sxm": "an SXM", "pcie": "a PCIe", "nvl": "an NVL"}
_MEMORY_TYPES = frozenset({"hbm2", "hbm2e", "hbm3", "hbm3e", "gddr6", "gddr6x"})


def _chip(gpu: str) -> str:
    """``A100-SXM`` -> ``a100``: the chip part of a catalog GPU name."""
    return re.split(r"[\s_\-/]+", gpu.strip().lower(), maxsplit=1)[0]


def _variant_problem(name: str, canonical: str, spec: GpuSpec, words: list[str]) -> str:
    """Why ``name``'s memory size or form factor is not ``canonical``'s ("" if it fits)."""
    for w in words:
        size = _MEMORY_WORD.fullmatch(w)
        if size:
            gb = float(size.group(1))
            if spec.memory_gb and abs(gb - spec.memory_gb) > 0.1 * spec.memory_gb:
                return (
                    f'"{name}" has {gb:g} GB; the catalog\'s {canonical} is the '
                    f"{spec.memory_gb:g} GB part"
                )
    kinds = _memory_types(spec)
    for w in words:
        if w in _MEMORY_TYPES and kinds and w not in kinds:
            return (
                f'"{name}" has {w.upper()} memory; the catalog\'s {canonical} has '
                f"{'/'.join(sorted(k.upper() for k in kinds))}"
            )
    form = _form_factor(spec)
    for w in words:
        said = _FORM_WORDS.get(w, "")
        if said and form and said != form:
            return (
                f'"{name}" is {_FORM_NAMES[said]} card; the catalog\'s {canonical} is '
                f"the {_FORM_NAMES[form].split()[1]} part (other bandwidth and links)"
            )
    return ""


def _note(spec: GpuSpec) -> str:
    """A GPU's source note, lower-cased ("" for a --hardware-config entry, whose source is
    the file's path and says nothing about the card)."""
    source = spec.source.strip()
    return "" if source.startswith("--hardware-config") else source.lower()


def _memory_types(spec: GpuSpec) -> set[str]:
    """The memory types (``hbm3``, ``gddr6``, ...) the GPU's source note names."""
    return {t for t in _MEMORY_TYPES if re.search(rf"\b{t}\b", _note(spec))}


def _form_factor(spec: GpuSpec) -> str:
    """``sxm``, ``pcie`` or ``nvl`` when the GPU's name, else the first sentence of its
    source, says which; ``""`` otherwise."""
    for text in (spec.name.lower(), _note(spec).split(".", 1)[0]):
        for word, form in (("sxm", "sxm"), ("pcie", "pcie"), ("nvl", "nvl")):
            if word in text:
                return form
    return ""


class Catalog:
    """Read-only view over the model, GPU and workload data the simulator needs.

    Model ids are case-insensitive (they are stored lower-cased) because users
    copy them from Hugging Face with arbitrary capitalisation.  GPU names are
    matched exactly, except that a GPU and its aliases are interchangeable:
    trained coefficients were recorded under names such as ``A100-80`` while
    the hardware table calls the same card ``A100-SXM``, and a user should
    reach the data whichever of the two spellings they use.
    """

    __slots__ = ("_alias_to_gpu", "_by_model", "_defaults", "_gpus", "_presets")

    def __init__(
        self,
        *,
        coefficients: Iterable[CoefficientSet] = (),
        defaults: Mapping[str, ModelDefaults] | None = None,
        presets: Mapping[str, WorkloadPreset] | None = None,
        gpus: Mapping[str, GpuSpec] | None = None,
        gpu_aliases: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        """Build a catalog from already-validated records.

        ``coefficients`` are kept in the given order, which is the search order
        of :meth:`find_coefficients`.  ``gpu_aliases`` maps a canonical GPU name
        (a key of ``gpus``) to its alternative spellings.
        """
        by_model: dict[str, list[CoefficientSet]] = {}
        for cs in coefficients:
            by_model.setdefault(cs.model.lower(), []).append(cs)
        self._by_model: Mapping[str, tuple[CoefficientSet, ...]] = MappingProxyType(
            {model: tuple(sets) for model, sets in by_model.items()}
        )
        self._defaults: Mapping[str, ModelDefaults] = MappingProxyType(
            {model.lower(): d for model, d in (defaults or {}).items()}
        )
        self._presets: Mapping[str, WorkloadPreset] = MappingProxyType(
            {name.lower(): p for name, p in (presets or {}).items()}
        )
        self._gpus: Mapping[str, GpuSpec] = MappingProxyType(dict(gpus or {}))
        alias_to_gpu: dict[str, str] = {}
        for canonical, aliases in (gpu_aliases or {}).items():
            if canonical not in self._gpus:
                raise CatalogError(
                    f'GPU aliases given for unknown GPU "{canonical}"; '
                    f"known: {', '.join(sorted(self._gpus)) or '(none)'}"
                )
            for alias in aliases:
                if alias in self._gpus and alias != canonical:
                    raise CatalogError(f'GPU alias "{alias}" of "{canonical}" is itself a GPU name')
                alias_to_gpu[alias] = canonical
        self._alias_to_gpu: Mapping[str, str] = MappingProxyType(alias_to_gpu)

    def __repr__(self) -> str:
        return (
            f"Catalog(models={len(self.model_ids())}, "
            f"coefficient_sets={sum(len(v) for v in self._by_model.values())}, "
            f"gpus={self.gpu_names()}, presets={self.preset_names()})"
        )

    # ----------------------------------------------------------------- models

    def model_ids(self) -> list[str]:
        """All known model ids (lower-case), sorted for stable listings."""
        return sorted(set(self._by_model) | set(self._defaults))

    def has_model(self, model_id: str) -> bool:
        """Whether the model has a default deployment or any coefficient set."""
        key = model_id.lower()
        return key in self._by_model or key in self._defaults

    def model_defaults(self, model_id: str) -> ModelDefaults | None:
        """The default deployment of ``model_id``, or ``None`` if it has none.

        ``None`` rather than an exception because a model may legitimately have
        coefficients without a preferred deployment; the caller then needs the
        user to name GPU, TP and vLLM version explicitly.
        """
        return self._defaults.get(model_id.lower())

    # ----------------------------------------------------------- coefficients

    def coefficient_sets(self, model_id: str | None = None) -> list[CoefficientSet]:
        """Coefficient sets in search order, for one model or for all models.

        Without ``model_id`` the models come in sorted order, each model's sets
        in the order they were loaded.
        """
        if model_id is not None:
            return list(self._by_model.get(model_id.lower(), ()))
        return [cs for model in sorted(self._by_model) for cs in self._by_model[model]]

    def find_coefficients(
        self, model_id: str, gpu: str, tp: int, vllm_version: str
    ) -> CoefficientSet | None:
        """The coefficients trained for exactly this deployment, if any.

        The model id is compared case-insensitively; ``tp`` and
        ``vllm_version`` must match exactly.  The GPU must match exactly or be
        an alias of the same card (``"A100-SXM"`` finds sets recorded as
        ``"A100-80"`` and vice versa).  An exact GPU spelling is preferred over
        an alias; within each of those two passes the first set in search
        order wins, so overrides loaded in front of the bundled data take
        precedence and duplicate training runs resolve deterministically.
        """
        candidates = [
            cs
            for cs in self._by_model.get(model_id.lower(), ())
            if cs.tp == tp and cs.vllm_version == vllm_version
        ]
        for cs in candidates:
            if cs.gpu == gpu:
                return cs
        wanted = self._canonical_gpu(gpu)
        for cs in candidates:
            if self._canonical_gpu(cs.gpu) == wanted:
                return cs
        return None

    # ------------------------------------------------------------------- GPUs

    def _canonical_gpu(self, name: str) -> str:
        """The hardware-table name for ``name``; unknown names map to themselves."""
        return self._alias_to_gpu.get(name, name)

    def gpu_names(self) -> list[str]:
        """Canonical GPU names (without aliases), sorted."""
        return sorted(self._gpus)

    def match_gpu(self, name: str) -> str | None:
        """The catalog GPU a free-form name denotes, or None when none resembles it.

        Accepts the spellings people and tools use for the same card: vendor prefixes
        (``NVIDIA H100 80GB HBM3`` as nvidia-smi prints it), the memory size, the form
        factor and memory type (``A100-SXM4-80GB``, ``H100-SXM5``, ``a100_80gb``), any
        case and any of space, ``_`` or ``-`` between words. The first word names the
        chip; the memory size, memory type and form factor pick among the catalog's
        variants of it (``A100-SXM4-40GB``: the 40 GB part; a bare ``A100``: the largest).
        A variant the catalog lacks (an H100 NVL: other bandwidth, other links) raises
        :class:`CatalogError` saying so, because pricing one as another would be silently
        wrong.
        """
        words = [w for w in re.split(r"[\s_\-/]+", name.strip().lower()) if w]
        words = [w for w in words if w not in _VENDOR_WORDS]
        if not words:
            return None
        chip, rest = words[0], words[1:]
        if any(
            not _MEMORY_WORD.fullmatch(w) and w not in _FORM_WORDS and w not in _MEMORY_TYPES
            for w in rest
        ):
            return None  # a word that is not a size, form or memory type: another card
        fits: list[str] = []
        problems: list[tuple[bool, float, str]] = []
        for canonical in sorted(g for g in self._gpus if _chip(g) == chip):
            spec = self._gpus[canonical]
            problem = _variant_problem(name, canonical, spec, rest)
            if problem:
                problems.append((" GB part" in problem, -spec.memory_gb, problem))
            else:
                fits.append(canonical)
        if len(fits) == 1:
            return fits[0]
        if len(fits) > 1:  # the bare chip name, else the largest memory (A100: the 80 GB)
            bare = [g for g in fits if g.lower() == chip]
            if len(bare) == 1:
                return bare[0]
            return max(fits, key=lambda g: (self._gpus[g].memory_gb, g))
        if problems:  # a form or memory-type reason first, then the largest part's
            raise CatalogError(min(problems)[2])
        return None

    def gpu_aliases(self, name: str) -> list[str]:
        """Alternative spellings accepted for the GPU called ``name`` (sorted)."""
        canonical = self._canonical_gpu(name)
        return sorted(a for a, c in self._alias_to_gpu.items() if c == canonical)

    def gpu(self, name: str) -> GpuSpec:
        """Hardware figures for a GPU given by canonical name or alias.

        Raises :class:`CatalogError` listing the accepted names, because an
        unknown GPU is almost always a typo on the command line.
        """
        spec = self._gpus.get(self._canonical_gpu(name))
        if spec is None:
            known = [
                f"{g} (alias {', '.join(self.gpu_aliases(g))})" if self.gpu_aliases(g) else g
                for g in self.gpu_names()
            ]
            raise CatalogError(f'unknown GPU "{name}"; known: {", ".join(known) or "(none)"}')
        return spec

    # ---------------------------------------------------------------- presets

    def preset_names(self) -> list[str]:
        """Names of the workload presets, sorted."""
        return sorted(self._presets)

    def preset(self, name: str) -> WorkloadPreset:
        """The named workload preset (case-insensitive).

        Raises :class:`CatalogError` listing the known presets.
        """
        found = self._presets.get(name.lower())
        if found is None:
            raise CatalogError(
                f'unknown workload preset "{name}"; '
                f"known: {', '.join(self.preset_names()) or '(none)'}"
            )
        return found

    # ---------------------------------------------------------------- merging

    def with_overrides(self, other: Catalog) -> Catalog:
        """A new catalog in which ``other`` takes precedence over ``self``.

        ``other``'s coefficient sets are searched before ours (so its entry for
        a deployment shadows ours without deleting it), and its model defaults,
        presets and GPUs replace ours of the same name.  Neither input is
        modified, which keeps the cached bundled catalog pristine.
        """
        coefficients: list[CoefficientSet] = []
        for model in sorted(set(self._by_model) | set(other._by_model)):
            coefficients.extend(other._by_model.get(model, ()))
            coefficients.extend(self._by_model.get(model, ()))
        gpus = {**self._gpus, **other._gpus}
        aliases: dict[str, list[str]] = {g: [] for g in gpus}
        for source in (self, other):
            for alias, canonical in source._alias_to_gpu.items():
                for bucket in aliases.values():
                    if alias in bucket:
                        bucket.remove(alias)
                if alias not in gpus:
                    aliases[canonical].append(alias)
        return Catalog(
            coefficients=coefficients,
            defaults={**self._defaults, **other._defaults},
            presets={**self._presets, **other._presets},
            gpus=gpus,
            gpu_aliases=aliases,
        )
