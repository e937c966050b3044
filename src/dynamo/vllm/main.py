"""Entry point of `python -m dynamo.vllm --model M [any vLLM engine argument]`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dynamo.engines.base import EngineInfo
from dynamo.engines.vllm.args import parse_vllm_args
from dynamo.engines.vllm.engine import VllmEngine
from dynamo.protocols.model_card import ModelCard
from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.errors import DynamoError
from dynamo.worker.core import Worker
from dynamo.worker.metrics import ComponentMetrics
from dynamo.worker.model_card import build_model_card, read_tokenizer_facts
from dynamo.worker.run import run_workers, setup_logging

PROG = "python -m dynamo.vllm"


def main(argv: Sequence[str] | None = None) -> None:
    setup_logging()
    try:
        config, engine_args = parse_vllm_args(argv)
    except DynamoError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    namespace = config.runtime.namespace
    component = "prefill" if config.is_prefill_worker else "backend"
    address = (
        EndpointAddress.parse(config.endpoint)
        if config.endpoint
        else EndpointAddress(namespace, component, "generate")
    )
    publish = config.publish_kv_events and not config.is_decode_worker
    engine = VllmEngine(engine_args, publish_kv_events=publish)

    def make_card(info: EngineInfo) -> ModelCard:
        facts = read_tokenizer_facts(engine.model_dir)
        card = build_model_card(
            engine.served_model_name, facts, info, role=config.role, source_path=engine.model_dir
        )
        return card.model_copy(update={"migration_limit": config.migration_limit})

    def build(runtime: DistributedRuntime, metrics: ComponentMetrics) -> list[Worker]:
        return [
            Worker(
                runtime,
                engine,
                address,
                make_card,
                metrics=metrics,
                publish_kv_events=publish,
            )
        ]

    run_workers(PROG, config.runtime, build)
