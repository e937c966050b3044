"""What the profiler is asked to do, read from a DGDR manifest, its spec or a bare config.

Accepted inputs (YAML or JSON, keys camelCase or snake_case): a whole
`DynamoGraphDeploymentRequest`, its `spec`, or Dynamo's `profilingConfig.config` (the sections
`sla`, `hardware`, `sweep`, `engine`, `deployment`, `planner`). Everything becomes one frozen
`ProfileRequest`; unknown or unsupported settings are refused with the key named.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dynamo.deploy.dgdr import DgdrSpec
from dynamo.deploy.graph import format_validation_error
from dynamo.profiler.overhead import MEASURED, ServingOverhead, parse_overhead
from dynamo.runtime.errors import ConfigError

MODES = ("rapid", "thorough")
BACKENDS = ("vllm", "sglang", "trtllm")
SECTIONS = ("sla", "hardware", "sweep", "engine", "deployment", "planner")
# keys of each section we act on; anything else is refused, so a typo never goes unnoticed
KNOWN_KEYS: dict[str, set[str]] = {
    "sla": {"isl", "osl", "ttft", "itl"},
    "hardware": {
        "min_num_gpus_per_engine",
        "max_num_gpus_per_engine",
        "num_gpus_per_node",
        "gpu_type",
    },
    "sweep": {
        "prefill_interpolation_granularity",
        "decode_interpolation_granularity",
        "use_ai_configurator",
        "aic_system",
        "aic_hf_id",
        "aic_model_name",
        "aic_backend",
        "aic_backend_version",
        "dry_run",
        "pick_with_webui",
        "deploy_closest",
        "serving_overhead",  # ours: rapid's serving-stack model (overhead.py)
        "search_strategy",  # rapid | thorough (Dynamo v1beta1's name); --mode overrides it
    },
    "engine": {"backend", "config", "max_context_length", "is_moe_model"},
    "deployment": {"namespace", "model", "dgd_image", "deployment_timeout", "service_name"},
}
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def snake(key: str) -> str:
    """`minNumGpusPerEngine` -> `min_num_gpus_per_engine` (snake_case stays as it is)."""
    return _CAMEL.sub(r"_\1", key).lower()


@dataclass(frozen=True)
class Sla:
    isl: int = 3000
    osl: int = 500
    ttft_ms: float = 50.0
    itl_ms: float = 10.0


@dataclass(frozen=True)
class Hardware:
    min_gpus_per_engine: int = 1
    max_gpus_per_engine: int = 4
    gpus_per_node: int = 8
    gpu_type: str = "h100_sxm"


@dataclass(frozen=True)
class ProfileRequest:
    """One profiling run, fully resolved."""

    model: str
    backend: str
    use_mocker: bool = False
    mode: str = "rapid"
    sla: Sla = field(default_factory=Sla)
    hardware: Hardware = field(default_factory=Hardware)
    prefill_granularity: int = 16
    decode_granularity: int = 6
    max_context_length: int | None = None
    deploy_closest: bool = False
    serving_overhead: ServingOverhead = MEASURED  # added to rapid's TTFT
    name: str = "profiled"  # name of the generated DGD
    namespace: str | None = None
    image: str = "pydynamo/runtime:0.1.0"
    deployment_timeout_s: float = 300.0
    base_config: dict[str, Any] | None = None  # engine.config: a base DGD
    planner_args: tuple[tuple[str, str], ...] = ()  # planner.planner_* -> --*
    ignored: tuple[str, ...] = ()  # settings accepted but without effect here (logged)


def read_document(path: str | Path) -> dict[str, Any]:
    """The first YAML/JSON document of `path` (JSON is YAML, so one parser reads both)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror or exc}") from exc
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML/JSON: {exc}") from exc
    if not docs or not isinstance(docs[0], dict):
        raise ConfigError(f"{p}: expected a mapping (a DGDR, its spec or a profiler config)")
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "DynamoGraphDeploymentRequest":
            return doc
    return dict(docs[0])


def _section(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    raw = config.get(name) or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{name}: expected a mapping, got {type(raw).__name__}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        key_s = snake(str(key))
        if name == "planner":
            if not key_s.startswith("planner_"):
                raise ConfigError(f"planner.{key}: planner keys are planner_<flag>")
        elif key_s not in KNOWN_KEYS[name]:
            known = ", ".join(sorted(KNOWN_KEYS[name]))
            raise ConfigError(f"{name}.{key}: unknown key (known: {known})")
        out[key_s] = value
    return out


def _number(section: Mapping[str, Any], key: str, where: str, kind: type, default: Any) -> Any:
    if section.get(key) is None:
        return default
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{where}.{key}: expected a number, got {value!r}")
    try:
        number = kind(float(value)) if kind is int else kind(value)
    except ValueError as exc:
        raise ConfigError(f"{where}.{key}: expected a number, got {value!r}") from exc
    if number <= 0:
        raise ConfigError(f"{where}.{key}: must be > 0, got {value!r}")
    return number


def _split(doc: Mapping[str, Any]) -> tuple[DgdrSpec | None, dict[str, Any], dict[str, Any]]:
    """(validated DGDR spec or None, profiler config, metadata) of any accepted input."""
    meta: dict[str, Any] = {}
    if "spec" in doc and isinstance(doc["spec"], Mapping):
        meta = dict(doc.get("metadata") or {})
        doc = doc["spec"]
    keys = {snake(str(k)) for k in doc}
    if not keys & {"profiling_config", "model", "backend", "use_mocker"}:
        return None, dict(doc), meta  # a bare profilingConfig.config
    try:
        spec = DgdrSpec.model_validate(doc, by_alias=True, by_name=True)
    except ValidationError as exc:
        raise ConfigError(f"spec: {format_validation_error(exc)}") from exc
    config = dict(spec.profiling_config.config or {}) if spec.profiling_config else {}
    return spec, config, meta


def parse_request(doc: Mapping[str, Any], *, mode: str | None = None) -> ProfileRequest:
    """A `ProfileRequest` from any accepted input; `ConfigError` names the bad key."""
    spec, config, meta = _split(doc)
    unknown = {snake(str(k)) for k in config} - set(SECTIONS)
    if unknown:
        raise ConfigError(
            f"profilingConfig.config: unknown section(s) {', '.join(sorted(unknown))} "
            f"(known: {', '.join(SECTIONS)})"
        )
    config = {snake(str(k)): v for k, v in config.items()}
    sla_s, hw_s, sweep_s, engine_s, deploy_s, planner_s = (
        _section(config, name) for name in SECTIONS
    )
    ignored: list[str] = []

    model = (spec.model if spec else None) or deploy_s.get("model")
    if not model:
        raise ConfigError("model: required (spec.model or deployment.model)")
    backend = (spec.backend if spec else None) or engine_s.get("backend") or "vllm"
    backend = "vllm" if backend == "auto" else str(backend)
    if backend not in BACKENDS:
        raise ConfigError(f"backend: {backend!r} is not one of {', '.join(BACKENDS)}")

    sla = Sla(
        isl=_number(sla_s, "isl", "sla", int, Sla.isl),
        osl=_number(sla_s, "osl", "sla", int, Sla.osl),
        ttft_ms=_number(sla_s, "ttft", "sla", float, Sla.ttft_ms),
        itl_ms=_number(sla_s, "itl", "sla", float, Sla.itl_ms),
    )
    hardware = Hardware(
        min_gpus_per_engine=_number(
            hw_s, "min_num_gpus_per_engine", "hardware", int, Hardware.min_gpus_per_engine
        ),
        max_gpus_per_engine=_number(
            hw_s, "max_num_gpus_per_engine", "hardware", int, Hardware.max_gpus_per_engine
        ),
        gpus_per_node=_number(hw_s, "num_gpus_per_node", "hardware", int, Hardware.gpus_per_node),
        gpu_type=str(hw_s.get("gpu_type") or Hardware.gpu_type).lower(),
    )
    if hardware.min_gpus_per_engine > hardware.max_gpus_per_engine:
        raise ConfigError(
            "hardware: min_num_gpus_per_engine "
            f"{hardware.min_gpus_per_engine} > max_num_gpus_per_engine "
            f"{hardware.max_gpus_per_engine}"
        )
    if engine_s.get("is_moe_model"):
        raise ConfigError(
            "engine.is_moe_model: MoE sweeps (TEP prefill / DEP decode) are not supported; "
            "dense models only (TP)"
        )
    for key in ("pick_with_webui", "dry_run"):
        if sweep_s.get(key):
            raise ConfigError(f"sweep.{key}: not supported by this profiler")

    chosen = mode or str(sweep_s.get("search_strategy") or "rapid")
    if chosen not in MODES:
        where = "mode" if mode else "sweep.search_strategy"
        raise ConfigError(f"{where}: {chosen!r} is not one of {', '.join(MODES)}")
    for key in sorted(sweep_s):
        if key.startswith("aic_") or key == "use_ai_configurator":
            ignored.append(f"sweep.{key} (rapid mode simulates every backend instead)")
    if chosen == "thorough" and sweep_s.get("serving_overhead") is not None:
        ignored.append("sweep.serving_overhead (thorough measures the serving stack itself)")

    base = engine_s.get("config")
    if isinstance(base, str):
        base = read_document(base)
    if base is not None and not isinstance(base, dict):
        raise ConfigError("engine.config: expected a DGD (mapping) or a path to one")

    overrides = spec.deployment_overrides if spec else None
    name = (overrides.name if overrides else None) or _dgd_name(meta.get("name"), model)
    return ProfileRequest(
        model=str(model),
        backend=backend,
        use_mocker=bool(spec.use_mocker) if spec else False,
        mode=chosen,
        sla=sla,
        hardware=hardware,
        prefill_granularity=_number(sweep_s, "prefill_interpolation_granularity", "sweep", int, 16),
        decode_granularity=_number(sweep_s, "decode_interpolation_granularity", "sweep", int, 6),
        max_context_length=_number(engine_s, "max_context_length", "engine", int, None),
        deploy_closest=bool(sweep_s.get("deploy_closest", False)),
        serving_overhead=(
            MEASURED
            if sweep_s.get("serving_overhead") is None
            else parse_overhead(sweep_s["serving_overhead"], "sweep.serving_overhead")
        ),
        name=name,
        namespace=(overrides.namespace if overrides else None) or deploy_s.get("namespace"),
        image=(overrides.workers_image if overrides else None)
        or deploy_s.get("dgd_image")
        or ProfileRequest.image,
        deployment_timeout_s=_number(deploy_s, "deployment_timeout", "deployment", float, 300.0),
        base_config=base,
        planner_args=tuple(
            (k.removeprefix("planner_").replace("_", "-"), _flag_value(v))
            for k, v in planner_s.items()
        ),
        ignored=tuple(ignored),
    )


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _dgd_name(dgdr_name: Any, model: str) -> str:
    """A DNS-1123 name for the generated DGD: the DGDR's, else one from the model id."""
    if dgdr_name:
        return str(dgdr_name)
    base = re.sub(r"[^a-z0-9-]+", "-", model.rsplit("/", 1)[-1].lower())[:40].strip("-")
    return base or "profiled"


def load_request(path: str | Path, *, mode: str | None = None) -> ProfileRequest:
    return parse_request(read_document(path), mode=mode)
