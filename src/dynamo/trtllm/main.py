"""Entry point of `python -m dynamo.trtllm --model-path M [--extra-engine-args file.yaml]`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dynamo.engines.trtllm import TrtllmEngine, import_tensorrt_llm, llm_class
from dynamo.engines.trtllm_args import parse_trtllm_args
from dynamo.engines.trtllm_disagg import require_cache_transceiver
from dynamo.runtime.errors import DynamoError
from dynamo.worker.run import serve_engine, setup_logging

PROG = "python -m dynamo.trtllm"


def main(argv: Sequence[str] | None = None) -> None:
    setup_logging()
    try:
        trt = import_tensorrt_llm()  # before the model is resolved (maybe downloaded)
        config, llm_kwargs = parse_trtllm_args(argv)
        require_cache_transceiver(llm_kwargs, config.role)
        llm_class(trt, config.backend)  # --backend tensorrt needs that backend installed
    except DynamoError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    serve_engine(
        PROG,
        config.runtime,
        TrtllmEngine(
            llm_kwargs,
            served_model_name=config.served_model_name,
            publish_kv_events=config.publish_events_and_metrics,
            role=config.role,
        ),
        role=config.role,
        endpoint=config.endpoint,
        component="tensorrt_llm",  # Dynamo's component name for TRT-LLM decode workers
        publish_kv_events=config.publish_events_and_metrics,
        migration_limit=config.migration_limit,
        parsers=config.parsers,
    )
