"""Entry point of `python -m dynamo.vllm --model M [any vLLM engine argument]`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dynamo.engines.vllm.args import parse_vllm_args
from dynamo.engines.vllm.engine import VllmEngine
from dynamo.engines.vllm.headless import run_headless_rank
from dynamo.runtime.errors import DynamoError
from dynamo.worker.run import serve_engine, setup_logging

PROG = "python -m dynamo.vllm"


def main(argv: Sequence[str] | None = None) -> None:
    setup_logging()
    try:
        config, engine_args = parse_vllm_args(
            argv
        )  # refuses a prefill/decode role without KV transfer
    except DynamoError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    if config.headless:
        # A non-leader rank of a multi-node engine: model workers only, no runtime, nothing
        # registered; the leader serves the model.
        try:
            run_headless_rank(engine_args)
        except DynamoError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            sys.exit(2)
        return
    publish = config.publish_kv_events
    serve_engine(
        PROG,
        config.runtime,
        VllmEngine(engine_args, publish_kv_events=publish, role=config.role),
        role=config.role,
        endpoint=config.endpoint,
        publish_kv_events=publish,
        migration_limit=config.migration_limit,
        parsers=config.parsers,
    )
