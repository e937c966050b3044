"""Entry point of `python -m dynamo.sglang --model-path M [any SGLang server argument]`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dynamo.engines.sglang import SglangEngine, parse_sglang_args
from dynamo.runtime.errors import DynamoError
from dynamo.worker.run import serve_engine, setup_logging

PROG = "python -m dynamo.sglang"


def main(argv: Sequence[str] | None = None) -> None:
    setup_logging()
    try:
        config, server_args, role = parse_sglang_args(argv)
    except DynamoError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    serve_engine(
        PROG,
        config.runtime,
        SglangEngine(server_args, publish_kv_events=config.publish_kv_events),
        role=role,
        endpoint=config.endpoint,
        publish_kv_events=config.publish_kv_events,
        migration_limit=config.migration_limit,
    )
