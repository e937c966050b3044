"""Entry point of `python -m dynamo.mocker`: one process, `--num-workers` simulated workers."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from dynamo.engines.base import EngineInfo
from dynamo.engines.mocker.canned import CannedOutputs
from dynamo.engines.mocker.config import MockerConfig
from dynamo.engines.mocker.engine import MockerEngine
from dynamo.engines.mocker.transfer import kv_bytes_per_token
from dynamo.engines.mocker.vocab import silent_token_ids
from dynamo.protocols.model_card import ModelCard, WorkerRole
from dynamo.protocols.parsers.flags import ParserFlags
from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.config import RuntimeConfig, add_arguments, resolve
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.errors import ConfigError, DynamoError
from dynamo.worker.core import Worker
from dynamo.worker.metrics import ComponentMetrics
from dynamo.worker.model_card import TokenizerFacts, build_model_card, read_tokenizer_facts
from dynamo.worker.run import run_workers, setup_logging

log = logging.getLogger("dynamo.mocker")
PACKAGED_TINY_MODEL = "dynamo:tinymodel"


def tokenizer_dir(model_path: str) -> Path:
    """A local directory with the tokenizer files of `model_path` (dir, packaged or hub id)."""
    if model_path == PACKAGED_TINY_MODEL:
        from dynamo.mocker.tinymodel import tiny_model_path

        return Path(tiny_model_path())
    local = Path(model_path).expanduser()
    if local.is_dir():
        return local
    if model_path.startswith(("/", ".", "~")) or local.exists():
        raise ConfigError(f"--model-path {model_path!r}: not a model directory")
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                model_path, allow_patterns=["*.json", "*.jinja", "tokenizer*", "*.model"]
            )
        )
    except Exception as exc:  # hub errors come in many types; all mean "cannot get it"
        raise ConfigError(f"--model-path {model_path!r}: cannot load a tokenizer: {exc}") from exc


def is_hub_id(model_path: str | None) -> bool:
    """Whether `--model-path` names a hub repo (not a local path or the packaged model)."""
    if not model_path or model_path == PACKAGED_TINY_MODEL:
        return False
    return not model_path.startswith(("/", ".", "~")) and not Path(model_path).exists()


def role_of(config: MockerConfig) -> WorkerRole:
    return {
        "prefill": WorkerRole.PREFILL,
        "decode": WorkerRole.DECODE,
        "agg": WorkerRole.AGGREGATED,
    }[config.mode]


def parse_args(
    argv: Sequence[str] | None,
) -> tuple[RuntimeConfig, MockerConfig, ParserFlags]:
    parser = argparse.ArgumentParser(
        prog="python -m dynamo.mocker",
        description="Simulated vLLM workers: paged KV cache, continuous batching, KV events.",
    )
    add_arguments(parser, MockerConfig, title="mocker engine")
    add_arguments(parser, RuntimeConfig, title="runtime")
    add_arguments(parser, ParserFlags, title="output parsers")
    args = parser.parse_args(argv)
    return resolve(RuntimeConfig, args), resolve(MockerConfig, args), resolve(ParserFlags, args)


def build_workers(
    runtime: DistributedRuntime,
    runtime_config: RuntimeConfig,
    config: MockerConfig,
    facts: TokenizerFacts,
    metrics: ComponentMetrics | None = None,
    parsers: ParserFlags | None = None,
    canned: CannedOutputs | None = None,
) -> list[Worker]:
    """`--num-workers` mocker engines, each its own instance of the endpoint."""
    name = config.model_name or config.model_path or "mocker"
    role = role_of(config)
    address = (
        EndpointAddress.parse(config.endpoint)
        if config.endpoint
        else EndpointAddress.parse(config.endpoint_for(runtime_config.namespace))
    )

    hub_repo = config.model_path if is_hub_id(config.model_path) else None
    # Outputs are ids that detokenize to text alone: one stream chunk per token, as in Dynamo.
    silent = silent_token_ids(facts.directory / "tokenizer.json", facts.vocab_size)

    def make_card(info: EngineInfo) -> ModelCard:
        card = build_model_card(
            name, facts, info, role=role, source_path=config.model_path, hub_repo=hub_repo
        )
        return card.model_copy(update=parsers.card_fields()) if parsers else card

    return [
        Worker(
            runtime,
            MockerEngine(
                config,
                facts.vocab_size,
                facts.eos_token_ids,
                special_token_ids=silent,
                kv_bytes_per_token=config.kv_bytes_per_token or kv_bytes_per_token(facts.directory),
                canned=canned,
            ),
            address,
            make_card,
            metrics=metrics,
            publish_kv_events=True,  # decode workers too: conditional disagg reads them
            model_dir=facts.directory,
        )
        for _ in range(config.num_workers)
    ]


def main(argv: Sequence[str] | None = None) -> None:
    setup_logging("mocker")
    try:
        runtime_config, config, parsers = parse_args(argv)
        if not config.model_path:
            raise ConfigError(
                "--model-path is required (a model directory, hub id or dynamo:tinymodel)"
            )
        facts = read_tokenizer_facts(tokenizer_dir(config.model_path))
        canned = (
            CannedOutputs.from_files(config.canned_outputs, facts.directory)
            if config.canned_outputs
            else None
        )
    except DynamoError as exc:
        print(f"dynamo.mocker: error: {exc}", file=sys.stderr)
        sys.exit(2)
    run_workers(
        "python -m dynamo.mocker",
        runtime_config,
        lambda runtime, metrics: build_workers(
            runtime, runtime_config, config, facts, metrics, parsers, canned
        ),
    )
