"""A non-leader rank of a multi-node SGLang engine (`--nnodes N --node-rank R`, R >= 1).

SGLang's ranks above 0 run schedulers (model shards) only: no tokenizer, no requests. Built
through `sglang.Engine`, such a rank starts its schedulers, answers health checks on
`--host:--port` and blocks until they exit, unless `SGLANG_BLOCK_NONZERO_RANK_CHILDREN=0`
asks it to return; this module lets it block. `dynamo.sglang` starts no Dynamo runtime for
such a rank and registers nothing with discovery: the leader (rank 0) serves the model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from dynamo.runtime.errors import ConfigError

log = logging.getLogger(__name__)

NONBLOCKING_ENV = "SGLANG_BLOCK_NONZERO_RANK_CHILDREN"


def is_non_leader(server_args: Any) -> bool:
    return int(getattr(server_args, "node_rank", 0) or 0) >= 1


def run_non_leader_rank(server_args: Any, engine_factory: Callable[..., Any]) -> None:
    """Run this node's SGLang schedulers until they exit (blocks). `engine_factory` is
    `sglang.Engine`."""
    nnodes, rank = int(server_args.nnodes), int(server_args.node_rank)
    if not 1 <= rank < nnodes:
        raise ConfigError(f"--node-rank {rank} is outside 0..{nnodes - 1} (--nnodes {nnodes})")
    if not server_args.dist_init_addr:
        raise ConfigError(
            f"--node-rank {rank} needs --dist-init-addr HOST:PORT (the rank-0 node's address)"
        )
    os.environ.pop(NONBLOCKING_ENV, None)  # SGLang blocks here while its schedulers live
    log.info(
        "SGLang node rank %d of %d: schedulers only, joining %s",
        rank,
        nnodes,
        server_args.dist_init_addr,
    )
    try:
        engine_factory(server_args=server_args)
    except Exception as exc:  # SGLang reports bad arguments as many exception types
        raise ConfigError(f"SGLang engine failed to start: {exc}") from exc
