"""Policy options: the ``--policy-config`` bundle, precedence, validation, construction.

Bundle schema (YAML, every key optional, unknown keys rejected)::

    admission:
      policy: token-bucket
      token_bucket_capacity: 5000
      token_bucket_refill_rate: 800
    routing:
      policy: weighted
      scorers:                  # order matters; used only by `weighted`
        - {name: prefix-affinity, weight: 3}
        - {name: queue-depth, weight: 2}
    priority:
      policy: slo-based
    scheduler: priority-fcfs

A bundle value applies unless the matching flag was given explicitly (on the command
line, or as a ``simulate()`` keyword), even with its default value. Bundle scorers
apply only when the final routing policy is ``weighted`` and ``--routing-scorers`` is
empty. Every error names the file, line and key.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from inference_sim.config.checks import require_finite
from inference_sim.config.errors import ConfigError
from inference_sim.config.options import BY_NAME
from inference_sim.core.inputs import compose_yaml, read_text
from inference_sim.core.suggest import did_you_mean
from inference_sim.policies import (
    ADMISSION,
    DEFAULT_PROFILE,
    PRIORITY,
    ROUTING,
    SCHEDULERS,
    SCORERS,
    PolicyError,
    make_wait_queue_hook,
    parse_scorers,
)
from inference_sim.policies.registry import Registry
from inference_sim.policies.scorers import format_scorers

log = logging.getLogger("inference_sim")

# option name -> (registry, flag)
NAMED_POLICIES: dict[str, tuple[Registry, str]] = {
    "admission_policy": (ADMISSION, "--admission-policy"),
    "routing_policy": (ROUTING, "--routing-policy"),
    "priority_policy": (PRIORITY, "--priority-policy"),
    "scheduler": (SCHEDULERS, "--scheduler"),
}
BUNDLE_OPTIONS = (
    "admission_policy",
    "token_bucket_capacity",
    "token_bucket_refill_rate",
    "routing_policy",
    "priority_policy",
    "scheduler",
)
# bundle section -> {key: option name}; None marks the scorer list.
_SCHEMA: dict[str, dict[str, str | None]] = {
    "admission": {
        "policy": "admission_policy",
        "token_bucket_capacity": "token_bucket_capacity",
        "token_bucket_refill_rate": "token_bucket_refill_rate",
    },
    "routing": {"policy": "routing_policy", "scorers": None},
    "priority": {"policy": "priority_policy"},
}
_TOP_KEYS = ("admission", "routing", "priority", "scheduler")


@dataclass
class PolicyBundle:
    """A parsed bundle: option values and where each came from (1-based lines)."""

    path: str
    values: dict[str, Any] = field(default_factory=dict)
    scorers: list[tuple[str, float]] | None = None
    lines: dict[str, int] = field(default_factory=dict)  # option name or "scorers[i]"
    keys: dict[str, str] = field(default_factory=dict)  # option name -> dotted key

    def where(self, name: str) -> str:
        line = self.lines.get(name, 1)
        return f"--policy-config {self.path} line {line}: {self.keys.get(name, name)}"


# --- loading -------------------------------------------------------------------------


def load_bundle(path: str) -> PolicyBundle:
    """Read and check ``path``; ConfigError naming the key and line on any problem."""
    try:
        text = read_text(path)
    except UnicodeDecodeError:
        raise ConfigError(f"--policy-config {path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"--policy-config {path}: cannot read: {exc.strerror or exc}") from None
    try:
        root = compose_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"--policy-config {path}{where}: invalid YAML: {problem}") from None
    bundle = PolicyBundle(path)
    if root is None:
        raise ConfigError(f"--policy-config {path}: the file is empty")
    _expect_mapping(root, bundle, "the document", f"keys {', '.join(_TOP_KEYS)}")
    for key_node, value_node in _pairs(root, bundle, "the document", _TOP_KEYS):
        key = key_node.value
        if key == "scheduler":
            _scalar_option(bundle, "scheduler", "scheduler", value_node, str)
            continue
        section = _SCHEMA[key]
        if _is_null(value_node):
            continue
        _expect_mapping(value_node, bundle, key, f"keys {', '.join(section)}")
        for sub_key_node, sub_node in _pairs(value_node, bundle, key, tuple(section)):
            sub = sub_key_node.value
            option = section[sub]
            dotted = f"{key}.{sub}"
            if option is None:
                bundle.scorers = _scorer_list(bundle, dotted, sub_node)
            elif sub == "policy":
                _scalar_option(bundle, option, dotted, sub_node, str)
            else:
                _scalar_option(bundle, option, dotted, sub_node, float)
    return bundle


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _expect_mapping(node: yaml.Node, bundle: PolicyBundle, what: str, expected: str) -> None:
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(
            f"--policy-config {bundle.path} line {_line(node)}: {what} must be a mapping "
            f"with {expected}"
        )


def _pairs(
    node: yaml.MappingNode, bundle: PolicyBundle, section: str, allowed: tuple[str, ...]
) -> list[tuple[yaml.ScalarNode, yaml.Node]]:
    seen: set[str] = set()
    out = []
    for k, v in node.value:
        key = k.value if isinstance(k, yaml.ScalarNode) else None
        where = f"--policy-config {bundle.path} line {_line(k)}"
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key {key!r} in {section}{did_you_mean(key, allowed)}; "
                f"valid: {', '.join(allowed)}"
            )
        if key in seen:
            raise ConfigError(f"{where}: key {key!r} given twice in {section}")
        seen.add(key)
        out.append((k, v))
    return out


def _construct(node: yaml.Node) -> Any:
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _scalar_option(
    bundle: PolicyBundle, option: str, dotted: str, node: yaml.Node, kind: type
) -> None:
    where = f"--policy-config {bundle.path} line {_line(node)}: {dotted}"
    if _is_null(node):
        return  # absent
    value = _construct(node) if isinstance(node, yaml.ScalarNode) else None
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a name (string), got {_show(node)}")
        if not value:
            return  # empty string: absent
    else:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {_show(node)}")
        value = float(value)
    bundle.values[option] = value
    bundle.lines[option] = _line(node)
    bundle.keys[option] = dotted


def _show(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return repr(node.value)
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"


def _scorer_list(
    bundle: PolicyBundle, dotted: str, node: yaml.Node
) -> list[tuple[str, float]] | None:
    if _is_null(node):
        return None
    if not isinstance(node, yaml.SequenceNode):
        raise ConfigError(
            f"--policy-config {bundle.path} line {_line(node)}: {dotted} must be a list of "
            "{name, weight} entries"
        )
    out: list[tuple[str, float]] = []
    for i, item in enumerate(node.value):
        label = f"{dotted}[{i}]"
        _expect_mapping(item, bundle, label, "keys name, weight")
        name: Any = None
        weight: Any = None
        for k, v in _pairs(item, bundle, label, ("name", "weight")):
            value = _construct(v) if isinstance(v, yaml.ScalarNode) else None
            where = f"--policy-config {bundle.path} line {_line(v)}: {label}.{k.value}"
            if k.value == "name":
                if not isinstance(value, str) or not value:
                    raise ConfigError(f"{where} must be a scorer name, got {_show(v)}")
                name = value
            else:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ConfigError(f"{where} must be a number, got {_show(v)}")
                weight = float(value)
        for missing, got in (("name", name is None), ("weight", weight is None)):
            if got:
                raise ConfigError(
                    f"--policy-config {bundle.path} line {_line(item)}: {label} needs a "
                    f"{missing} ({{name: SCORER, weight: W}})"
                )
        bundle.lines[label] = _line(item)
        bundle.keys[label] = label
        out.append((name, weight))
    return out


def validate_bundle(bundle: PolicyBundle) -> None:
    """The bundle's own checks, in the reference's order (first failure wins)."""
    for option, (registry, _flag) in NAMED_POLICIES.items():
        name = bundle.values.get(option)
        if name is not None:
            try:
                registry.lookup(name)
            except PolicyError as exc:
                raise ConfigError(f"{bundle.where(option)}: {exc}") from None
    for option in ("token_bucket_capacity", "token_bucket_refill_rate"):
        v = bundle.values.get(option)
        if v is None:
            continue
        if not math.isfinite(v):
            raise ConfigError(f"{bundle.where(option)} must be a finite number, got {v}")
        if v < 0:
            raise ConfigError(f"{bundle.where(option)} must be non-negative, got {v}")
    seen: set[str] = set()
    for i, (name, weight) in enumerate(bundle.scorers or []):
        where = bundle.where(f"routing.scorers[{i}]")
        if name not in SCORERS:
            try:
                SCORERS.lookup(name)
            except PolicyError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        if name in seen:
            raise ConfigError(f"{where}: duplicate scorer {name!r}; each may appear at most once")
        seen.add(name)
        if not (math.isfinite(weight) and weight > 0):
            raise ConfigError(
                f"{where}: scorer {name!r} weight must be a finite positive number, got {weight}"
            )


# --- resolution ----------------------------------------------------------------------


def resolve_policies(o: dict[str, Any], explicit: frozenset[str]) -> None:
    """Merge the bundle into ``o`` (flags given explicitly win) and validate, in place.

    Order (cli.md section 3): bundle load/validate/merge; token-bucket parameters;
    policy names; snapshot interval; scorers.
    """
    bundle: PolicyBundle | None = None
    origin: dict[str, str] = {}  # option -> " (from --policy-config FILE line N)"
    if o.get("policy_config"):
        bundle = load_bundle(o["policy_config"])
        validate_bundle(bundle)
        for option in BUNDLE_OPTIONS:
            if option in bundle.values and option not in explicit:
                o[option] = bundle.values[option]
                origin[option] = (
                    f" (from --policy-config {bundle.path} line {bundle.lines[option]})"
                )
    for option in NAMED_POLICIES:
        if not o[option]:
            o[option] = NAMED_POLICIES[option][0].default
    if o["admission_policy"] == "token-bucket":
        for name in ("token_bucket_capacity", "token_bucket_refill_rate"):
            require_finite(f"--{name.replace('_', '-')}", o[name], origin=origin.get(name, ""))
    for option, (registry, flag) in NAMED_POLICIES.items():
        try:
            registry.lookup(o[option])
        except PolicyError as exc:
            raise ConfigError(f"{flag}: {exc}{origin.get(option, '')}") from None
    log.info(
        "policy config: admission=%s, routing=%s, priority=%s, scheduler=%s",
        o["admission_policy"],
        o["routing_policy"],
        o["priority_policy"],
        o["scheduler"],
    )
    if (
        ("priority_policy" in explicit or "priority_policy" in origin)
        and o["priority_policy"] != "constant"
        and o["scheduler"] in ("fcfs", "sjf")
    ):
        log.warning(
            "--priority-policy %s%s orders nothing with --scheduler %s (only priority-fcfs and "
            "reverse-priority read priorities); it only feeds the priority_inversions count",
            o["priority_policy"],
            origin.get("priority_policy", ""),
            o["scheduler"],
        )
    interval = o["snapshot_refresh_interval"]
    if interval < 0:
        raise ConfigError(f"--snapshot-refresh-interval must be >= 0, got {interval}")
    text = o["routing_scorers"].strip()
    if text and _reads_routing_scorers(o):  # weighted, or a plug-in router (it may read them)
        try:
            parse_scorers(text)
        except PolicyError as exc:
            raise ConfigError(f"--routing-scorers: {exc}") from None
    if o["routing_policy"] == "weighted":
        if not text and bundle is not None and bundle.scorers:
            o["routing_scorers"] = format_scorers(bundle.scorers)
        pairs = parse_scorers(o["routing_scorers"]) if o["routing_scorers"].strip() else None
        shown = pairs or DEFAULT_PROFILE
        log.info("weighted routing scorers: %s", ", ".join(f"{n}:{w:.1f}" for n, w in shown))
    elif text or (bundle is not None and bundle.scorers):
        log.warning(
            "%s has no effect when routing policy is %r (only applies to 'weighted')",
            "--routing-scorers" if text else f"routing.scorers of --policy-config {bundle.path}",
            o["routing_policy"],
        )
    bucket = [
        f"--{name.replace('_', '-')}{origin.get(name, '')}"
        for name in ("token_bucket_capacity", "token_bucket_refill_rate")
        if (name in explicit or name in origin) and o[name] != BY_NAME[name].default
    ]
    if bucket and o["admission_policy"] in ("always-admit", "reject-all"):  # plug-ins may read them
        log.warning(
            "%s has no effect when admission policy is %r (only applies to 'token-bucket')",
            " and ".join(bucket),
            o["admission_policy"],
        )


#: Bundled routing policies that read no scorers. The reference parses
#: ``--routing-scorers`` only for ``weighted`` (cli.md 2.5): with these, even a malformed
#: list is only warned about, as there.
SCORERLESS_ROUTING = ("round-robin", "least-loaded", "always-busiest", "prefix-affinity", "vllm-dp")


def _reads_routing_scorers(o: dict[str, Any]) -> bool:
    """Whether a router of the run may read ``--routing-scorers``: the main one, or a
    P/D pool's that has no scorers of its own (config/pd.py falls back to these)."""
    routers = [o["routing_policy"]]
    if o.get("prefill_instances") or o.get("decode_instances"):
        for pool in ("prefill", "decode"):
            if not str(o.get(f"{pool}_routing_scorers") or "").strip():
                routers.append(o.get(f"{pool}_routing_policy") or o["routing_policy"])
    return any(policy not in SCORERLESS_ROUTING for policy in routers)


# --- construction --------------------------------------------------------------------

WaitQueueHook = Callable[..., None]


@dataclass
class PolicySet:
    """The policy objects of one run."""

    admission: Any
    routing: Any
    wait_queue_hooks: list[WaitQueueHook | None]
    priority_policy: str
    snapshot_refresh_interval: int

    def cluster_arguments(self, o: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments every cluster simulator takes (plain, P/D, autoscaled):
        the admission policy, the latencies, horizon, length cap and checks of ``o``."""
        return {
            "admission": self.admission,
            "admission_latency": o["admission_latency"],
            "routing_latency": o["routing_latency"],
            "horizon": o["horizon"],
            "max_model_len": o["max_model_len"],
            "check_invariants": o["check_invariants"],
            "snapshot_refresh_interval": self.snapshot_refresh_interval,
            "priority_policy": self.priority_policy,
            # with chunked prefill off the limit is at most the token budget (resolve.py)
            "length_limit_flag": "--max-model-len"
            if o.get("enable_chunked_prefill", True)
            else "--max-model-len (chunked prefill off: at most --max-num-batched-tokens)",
        }


def build_policies(o: dict[str, Any], num_instances: int, block_size: int) -> PolicySet:
    """Build the policies a resolved option dict names (one scheduler per instance)."""
    text = o.get("routing_scorers", "").strip()
    if o["routing_policy"] in SCORERLESS_ROUTING:
        text = ""  # not read, so not parsed (a malformed list was only warned about)
    context: dict[str, Any] = {
        "block_size": block_size,
        "num_instances": num_instances,
        "token_bucket_capacity": o["token_bucket_capacity"],
        "token_bucket_refill_rate": o["token_bucket_refill_rate"],
        "routing_scorers": parse_scorers(text) if text else None,
        "seed": o.get("seed", 0),
        "max_loras": o.get("max_loras", 0),  # the adapter-affinity scorer's slots
    }
    try:
        admission = ADMISSION.create(o["admission_policy"], **context)
        routing = ROUTING.create(o["routing_policy"], **context)
        hooks = [
            make_wait_queue_hook(
                PRIORITY.create(o["priority_policy"], **context),
                SCHEDULERS.create(o["scheduler"], **context),
            )
            for _ in range(num_instances)
        ]
    except PolicyError as exc:
        raise ConfigError(str(exc)) from None
    return PolicySet(
        admission=admission,
        routing=routing,
        wait_queue_hooks=hooks,
        priority_policy=o["priority_policy"] or "constant",
        snapshot_refresh_interval=o["snapshot_refresh_interval"],
    )
