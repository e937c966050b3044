"""Entry point of `python -m dynamo.sglang --model-path M [any SGLang server argument]`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dynamo.engines.sglang import SglangEngine, import_sglang, parse_sglang_args
from dynamo.engines.sglang_multinode import is_non_leader, run_non_leader_rank
from dynamo.runtime.errors import DynamoError
from dynamo.worker.run import serve_engine, setup_logging

PROG = "python -m dynamo.sglang"


def main(argv: Sequence[str] | None = None) -> None:
    setup_logging()
    try:
        config, server_args, role = parse_sglang_args(argv)
        if is_non_leader(server_args):
            # Schedulers only: no runtime, nothing registered; the rank-0 node serves.
            run_non_leader_rank(server_args, import_sglang().Engine)
            print(f"{PROG}: the SGLang schedulers of this node exited", file=sys.stderr)
            sys.exit(1)
        engine = SglangEngine(server_args, publish_kv_events=config.publish_kv_events)
        # The model loads here, on the main thread (SGLang 0.5.4 installs signal handlers) and
        # before the runtime exists: no lease or health check waits on it.
        engine.prepare()
    except DynamoError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    serve_engine(
        PROG,
        config.runtime,
        engine,
        role=role,
        endpoint=config.endpoint,
        publish_kv_events=config.publish_kv_events,
        migration_limit=config.migration_limit,
        parsers=config.parsers,
    )
