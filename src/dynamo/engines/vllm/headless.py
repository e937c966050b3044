"""A non-leader rank of a multi-node vLLM engine (`python -m dynamo.vllm --headless`).

vLLM's multiprocessing backend spans nodes with `--nnodes N --node-rank R --master-addr L`:
the leader (rank 0) runs the engine core and the API; every other node runs only its share of
the model's workers, which join the leader's torch.distributed group. Such a rank serves no
requests, so `dynamo.vllm` starts no runtime for it and registers nothing with discovery.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from dynamo.engines.vllm.engine import describe_error, import_vllm
from dynamo.runtime.errors import ConfigError

log = logging.getLogger(__name__)

ExecutorFactory = Callable[[Any], Any]


def check_headless(engine_args: Any) -> None:
    """Refuse `--headless` where it is not a non-leader rank of a tensor/pipeline-parallel
    engine spanning nodes (ConfigError saying what to pass)."""
    nnodes, rank = int(engine_args.nnodes), int(engine_args.node_rank)
    if nnodes < 2 or not 1 <= rank < nnodes:
        raise ConfigError(
            "--headless runs a non-leader rank of a multi-node engine: it needs --nnodes N "
            f"(N >= 2) and --node-rank 1..N-1 (got --nnodes {nnodes} --node-rank {rank})"
        )
    if int(engine_args.data_parallel_size) > 1:
        raise ConfigError(
            "--headless with --data-parallel-size > 1 (headless data-parallel engines) is not "
            "supported by dynamo.vllm; span nodes with tensor/pipeline parallelism"
        )


def _multiproc_executor(vllm_config: Any) -> Any:
    from vllm.v1.executor.multiproc_executor import MultiprocExecutor

    return MultiprocExecutor(vllm_config, monitor_workers=False)


def run_headless_rank(engine_args: Any, *, executor_factory: ExecutorFactory | None = None) -> None:
    """Run this node's model workers until they exit (blocks). `engine_args` is vLLM's
    `AsyncEngineArgs`; `executor_factory` replaces vLLM's `MultiprocExecutor` (tests)."""
    check_headless(engine_args)
    if executor_factory is None:
        import_vllm()
        executor_factory = _multiproc_executor
    try:
        vllm_config = engine_args.create_engine_config(headless=True)
    except Exception as exc:  # vLLM validates the parallel layout here
        raise ConfigError(f"vLLM rejected the engine arguments: {describe_error(exc)}") from exc
    parallel = vllm_config.parallel_config
    log.info(
        "vLLM node rank %d of %d: model workers only, joining %s:%s",
        engine_args.node_rank,
        engine_args.nnodes,
        parallel.master_addr,
        parallel.master_port,
    )
    executor = executor_factory(vllm_config)
    # This process only watches its model workers (they talk to the leader directly): on
    # SIGTERM/SIGINT it must stop them, or they outlive it as orphans still in the group.
    with _signals_exit():
        try:
            executor.start_worker_monitor(inline=True)
        finally:
            executor.shutdown()


@contextlib.contextmanager
def _signals_exit() -> Iterator[None]:
    """SIGTERM and SIGINT raise SystemExit while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _: FrameType | None) -> None:
        log.info("signal %d: stopping this node's vLLM workers", signum)
        raise SystemExit(0)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
