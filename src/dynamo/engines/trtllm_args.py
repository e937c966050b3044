"""`python -m dynamo.trtllm` flags: our worker config and the TensorRT-LLM `LLM` keyword
arguments (from `--extra-engine-args file.yaml`, then `--model-path`, `--tensor-parallel-size`
and `--backend`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from dynamo.engines.adapter_common import ConfigErrorParser, role_of_disaggregation_mode
from dynamo.engines.model_resolution import resolve_model
from dynamo.protocols.model_card import WorkerRole
from dynamo.protocols.parsers.flags import ParserFlags
from dynamo.runtime.config import RuntimeConfig, add_arguments, option, resolve
from dynamo.runtime.errors import ConfigError

BACKENDS = ("pytorch", "tensorrt")


@dataclasses.dataclass(frozen=True)
class TrtllmWorkerConfig:
    """`python -m dynamo.trtllm` flags (Dynamo's own and the engine's)."""

    model_path: str = option(help="local model directory, GGUF file or hub id", flag="--model-path")
    served_model_name: str | None = option(None, help="name clients use (default: --model-path)")
    extra_engine_args: str | None = option(
        None, help="YAML file of TensorRT-LLM `LLM` keyword arguments"
    )
    tensor_parallel_size: int = option(1, help="GPUs per engine (tensor parallelism)")
    backend: str = option(
        "pytorch",
        help="pytorch: tensorrt_llm.LLM; tensorrt: tensorrt_llm._tensorrt_engine.LLM (where the "
        "installed TensorRT-LLM still has the TensorRT engine backend)",
        choices=BACKENDS,
    )
    disaggregation_mode: str = option(
        "prefill_and_decode", help="role", choices=("prefill_and_decode", "prefill", "decode")
    )
    publish_events_and_metrics: bool = option(True, help="forward KV events and load metrics")
    endpoint: str | None = option(None, help="dyn://namespace.component.endpoint to serve")
    migration_limit: int = option(0, help="times a broken request may move to another worker")
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    parsers: ParserFlags = dataclasses.field(default_factory=ParserFlags)

    @property
    def role(self) -> WorkerRole:
        return role_of_disaggregation_mode(self.disaggregation_mode)


def parse_trtllm_args(
    argv: Sequence[str] | None = None, *, resolve_model_path: bool = True
) -> tuple[TrtllmWorkerConfig, dict[str, Any]]:
    """(our config, `LLM` keyword arguments) from `python -m dynamo.trtllm` flags."""

    parser = ConfigErrorParser(prog="python -m dynamo.trtllm", allow_abbrev=False)
    add_arguments(parser, TrtllmWorkerConfig, title="worker")
    add_arguments(parser, RuntimeConfig, title="Dynamo runtime")
    add_arguments(parser, ParserFlags, title="Dynamo output parsers")
    ns = parser.parse_args(list(argv) if argv is not None else None)
    if ns.model_path is None:
        raise ConfigError("--model-path is required")
    config = dataclasses.replace(
        resolve(TrtllmWorkerConfig, ns),
        runtime=resolve(RuntimeConfig, ns),
        parsers=resolve(ParserFlags, ns),
    )
    kwargs: dict[str, Any] = {}
    if config.extra_engine_args:
        kwargs.update(load_engine_args_yaml(config.extra_engine_args))
    model = config.model_path
    if resolve_model_path:
        model = resolve_model(model).path
    kwargs.update(
        model=model, tensor_parallel_size=config.tensor_parallel_size, backend=config.backend
    )
    if config.served_model_name is None:
        config = dataclasses.replace(config, served_model_name=config.model_path)
    return config, kwargs


def load_engine_args_yaml(path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"--extra-engine-args {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--extra-engine-args {path}: invalid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--extra-engine-args {path}: expected a mapping of LLM arguments")
    return data
