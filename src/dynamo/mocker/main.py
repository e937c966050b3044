"""Entry point of `python -m dynamo.mocker`: one process, `--num-workers` simulated workers."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from dynamo.engines.base import EngineInfo
from dynamo.engines.mocker.config import MockerConfig
from dynamo.engines.mocker.engine import MockerEngine
from dynamo.protocols.model_card import ModelCard, WorkerRole
from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.config import RuntimeConfig, add_arguments, resolve
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.errors import ConfigError, DynamoError
from dynamo.runtime.lifecycle import run_until_signal
from dynamo.worker.core import Worker
from dynamo.worker.metrics import ComponentMetrics
from dynamo.worker.model_card import TokenizerFacts, build_model_card, read_tokenizer_facts

log = logging.getLogger("dynamo.mocker")
PACKAGED_TINY_MODEL = "dynamo:tinymodel"


def tokenizer_dir(model_path: str) -> Path:
    """A local directory with the tokenizer files of `model_path` (dir, packaged or hub id)."""
    if model_path == PACKAGED_TINY_MODEL:
        from dynamo.testing.tinymodel import tiny_model_path

        return Path(tiny_model_path())
    local = Path(model_path).expanduser()
    if local.is_dir():
        return local
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                model_path, allow_patterns=["*.json", "*.jinja", "tokenizer*", "*.model"]
            )
        )
    except Exception as exc:  # hub errors come in many types; all mean "cannot get it"
        raise ConfigError(f"--model-path {model_path!r}: cannot load a tokenizer: {exc}") from exc


def role_of(config: MockerConfig) -> WorkerRole:
    if config.is_prefill_worker and config.is_decode_worker:
        raise ConfigError("--is-prefill-worker and --is-decode-worker are mutually exclusive")
    if config.is_prefill_worker:
        return WorkerRole.PREFILL
    if config.is_decode_worker:
        return WorkerRole.DECODE
    return WorkerRole.AGGREGATED


def parse_args(argv: Sequence[str] | None) -> tuple[RuntimeConfig, MockerConfig]:
    parser = argparse.ArgumentParser(
        prog="python -m dynamo.mocker",
        description="Simulated vLLM workers: paged KV cache, continuous batching, KV events.",
    )
    add_arguments(parser, MockerConfig, title="mocker engine")
    add_arguments(parser, RuntimeConfig, title="runtime")
    args = parser.parse_args(argv)
    return resolve(RuntimeConfig, args), resolve(MockerConfig, args)


def build_workers(
    runtime: DistributedRuntime,
    runtime_config: RuntimeConfig,
    config: MockerConfig,
    metrics: ComponentMetrics | None = None,
) -> list[Worker]:
    """`--num-workers` mocker engines, each its own instance of the endpoint."""
    if not config.model_path:
        raise ConfigError(
            "--model-path is required (a model directory, hub id or dynamo:tinymodel)"
        )
    facts: TokenizerFacts = read_tokenizer_facts(tokenizer_dir(config.model_path))
    name = config.model_name or config.model_path
    role = role_of(config)
    address = (
        EndpointAddress.parse(config.endpoint)
        if config.endpoint
        else EndpointAddress.parse(config.endpoint_for(runtime_config.namespace))
    )

    def make_card(info: EngineInfo) -> ModelCard:
        return build_model_card(name, facts, info, role=role, source_path=config.model_path)

    return [
        Worker(
            runtime,
            MockerEngine(config, facts.vocab_size, facts.eos_token_ids),
            address,
            make_card,
            metrics=metrics,
            publish_kv_events=role is not WorkerRole.DECODE,
        )
        for _ in range(config.num_workers)
    ]


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    runtime_config, config = parse_args(argv)
    registry = CollectorRegistry()
    metrics = ComponentMetrics(registry)

    async def serve(runtime: DistributedRuntime) -> None:
        workers = build_workers(runtime, runtime_config, config, metrics)
        try:
            await asyncio.gather(*(w.start() for w in workers))
            log.info("%d mocker worker(s) serving %s", len(workers), config.model_name)
            await asyncio.Event().wait()  # serve until the drain cancels us
        finally:
            for worker in workers:
                with contextlib.suppress(Exception):
                    await worker.stop()

    try:
        code = run_until_signal(serve, runtime_config, registry=registry)
    except DynamoError as exc:
        print(f"dynamo.mocker: error: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)
