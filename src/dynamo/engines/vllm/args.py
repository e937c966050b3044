"""Command line of `python -m dynamo.vllm`: our worker flags plus every vLLM engine argument.

One parser carries both, so `--help` lists everything; our flags (and `DYN_*` env vars) become a
`VllmWorkerConfig`, the rest goes through vLLM's own `AsyncEngineArgs.from_cli_args`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
from collections.abc import Sequence
from typing import Any, NoReturn

from dynamo.engines.model_resolution import resolve_model
from dynamo.engines.vllm.disagg import CONNECTOR_CHOICES, check_connector, connector_config
from dynamo.engines.vllm.engine import describe_error, import_vllm
from dynamo.protocols.model_card import WorkerRole
from dynamo.protocols.parsers.flags import ParserFlags
from dynamo.runtime.config import RuntimeConfig, add_arguments, option, resolve
from dynamo.runtime.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class VllmWorkerConfig:
    """Dynamo's own flags of a vLLM worker (vLLM's flags are in the engine args)."""

    endpoint: str | None = option(
        None,
        help="dyn://namespace.component.endpoint to serve (default dyn://<ns>.backend.generate, "
        "prefill workers dyn://<ns>.prefill.generate)",
    )
    is_prefill_worker: bool = option(
        False,
        help="register as a prefill worker (same as --disaggregation-mode prefill)",
    )
    is_decode_worker: bool = option(
        False, help="register as a decode worker (same as --disaggregation-mode decode)"
    )
    disaggregation_mode: str | None = option(
        None,
        choices=("agg", "prefill", "decode"),
        help="agg (default), prefill or decode; replaces --is-prefill-worker/--is-decode-worker",
    )
    connector: str | None = option(
        None,
        choices=CONNECTOR_CHOICES,
        help="vLLM KV connector of a prefill/decode worker: nixl (the default there), lmcache "
        "or none (the default of an aggregated worker); excludes --kv-transfer-config",
    )
    publish_kv_events: bool = option(
        True,
        help="forward vLLM's KV cache events to the router (vLLM publishes on a free local "
        "ZMQ port unless --kv-events-config names one)",
    )
    migration_limit: int = option(
        0, help="times a request broken by this worker's death may move to another worker"
    )
    headless: bool = option(
        False,
        help="a non-leader rank of a multi-node engine (with --nnodes and --node-rank >= 1): "
        "runs its model workers only, registers nothing",
    )
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    parsers: ParserFlags = dataclasses.field(default_factory=ParserFlags)

    def __post_init__(self) -> None:
        if self.is_prefill_worker and self.is_decode_worker:
            raise ConfigError("--is-prefill-worker and --is-decode-worker exclude each other")
        booleans = (
            "prefill" if self.is_prefill_worker else "decode" if self.is_decode_worker else None
        )
        if self.disaggregation_mode and booleans and self.disaggregation_mode != booleans:
            raise ConfigError(
                f"--disaggregation-mode {self.disaggregation_mode} contradicts "
                f"--is-{booleans}-worker"
            )
        if self.migration_limit < 0:
            raise ConfigError("--migration-limit must be >= 0")

    @property
    def role(self) -> WorkerRole:
        if self.is_prefill_worker or self.disaggregation_mode == "prefill":
            return WorkerRole.PREFILL
        if self.is_decode_worker or self.disaggregation_mode == "decode":
            return WorkerRole.DECODE
        return WorkerRole.AGGREGATED


def build_parser(prog: str = "python -m dynamo.vllm") -> argparse.ArgumentParser:
    """vLLM's `FlexibleArgumentParser` with vLLM's engine arguments and ours (imports vLLM)."""
    import_vllm()
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    class _Parser(FlexibleArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise ConfigError(message)

    parser = _Parser(prog=prog, description="A Dynamo worker serving a vLLM engine.")
    add_arguments(parser, VllmWorkerConfig, title="Dynamo worker")
    add_arguments(parser, RuntimeConfig, title="Dynamo runtime")
    add_arguments(parser, ParserFlags, title="Dynamo output parsers")
    AsyncEngineArgs.add_cli_args(parser)
    return parser


def parse_vllm_args(
    argv: Sequence[str] | None = None, *, resolve_model_path: bool = True
) -> tuple[VllmWorkerConfig, Any]:
    """(our config, `vllm.engine.arg_utils.AsyncEngineArgs`) from a command line.

    `--model` is resolved first (directory, GGUF file or hub id; see `resolve_model`): vLLM's
    engine args look hub ids up as soon as they are built. The served model name defaults to
    the `--model` given. Bad flags raise ConfigError with argparse's / vLLM's message; `--help`
    prints and exits as usual.
    """
    parser = build_parser()  # imports vLLM, or says how to install it
    from vllm.engine.arg_utils import AsyncEngineArgs

    ns = parser.parse_args(list(argv) if argv is not None else None)
    worker = resolve(VllmWorkerConfig, ns)
    runtime = resolve(RuntimeConfig, ns)
    config = dataclasses.replace(worker, runtime=runtime, parsers=resolve(ParserFlags, ns))
    if resolve_model_path:
        requested = str(ns.model)
        resolved = resolve_model(requested)
        if ns.tokenizer in (None, requested):
            ns.tokenizer = resolved.path
        ns.model = resolved.path
        if not ns.served_model_name:
            ns.served_model_name = [requested]
    apply_connector(config, ns)
    try:
        engine_args = AsyncEngineArgs.from_cli_args(ns)
    except Exception as exc:  # vLLM validates some arguments in __post_init__
        raise ConfigError(f"vLLM rejected the engine arguments: {describe_error(exc)}") from exc
    return config, engine_args


def apply_connector(config: VllmWorkerConfig, ns: argparse.Namespace) -> None:
    """Set vLLM's `kv_transfer_config` from `--connector`, and refuse at once a prefill/decode
    worker that could not transfer KV (imports vLLM)."""
    from vllm.config import KVTransferConfig

    wanted = connector_config(
        config.connector, config.role, has_kv_transfer_config=ns.kv_transfer_config is not None
    )
    if wanted is not None:
        ns.kv_transfer_config = KVTransferConfig(**wanted)
    kv_connector = getattr(ns.kv_transfer_config, "kv_connector", None)
    check_connector(kv_connector, config.role, installed=_installed)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
