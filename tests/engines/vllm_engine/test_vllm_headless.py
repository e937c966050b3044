"""`--headless`: a non-leader rank of a multi-node vLLM engine runs vLLM's model workers and
nothing else. vLLM itself is replaced by small fakes here (no multi-node engine runs on one
CPU box); `tests/engines/real/test_vllm_multinode_args.py` checks the flags against vLLM."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from dynamo.engines.vllm.headless import check_headless, run_headless_rank
from dynamo.runtime.errors import ConfigError


@dataclass
class FakeEngineArgs:
    """The fields of vLLM's `AsyncEngineArgs` that a headless rank reads."""

    nnodes: int = 2
    node_rank: int = 1
    data_parallel_size: int = 1
    master_addr: str = "leader.example"
    calls: list[dict[str, Any]] = field(default_factory=list)

    def create_engine_config(self, headless: bool = False) -> Any:
        self.calls.append({"headless": headless})
        parallel = SimpleNamespace(master_addr=self.master_addr, master_port=29501)
        return SimpleNamespace(parallel_config=parallel)


class FakeExecutor:
    made: list[FakeExecutor] = []

    def __init__(self, vllm_config: Any) -> None:
        self.vllm_config = vllm_config
        self.monitored_inline: bool | None = None
        self.shut_down = False
        FakeExecutor.made.append(self)

    def start_worker_monitor(self, inline: bool = False) -> None:
        self.monitored_inline = inline

    def shutdown(self) -> None:
        self.shut_down = True


class SignalledExecutor(FakeExecutor):
    """Its workers' monitor is interrupted by SIGTERM (the pod stopping)."""

    def start_worker_monitor(self, inline: bool = False) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises SystemExit before this ends
        raise AssertionError("SIGTERM did not interrupt the monitor")


def test_a_headless_rank_runs_the_executor_inline() -> None:
    FakeExecutor.made.clear()
    args = FakeEngineArgs(nnodes=4, node_rank=3)
    run_headless_rank(args, executor_factory=FakeExecutor)
    assert args.calls == [{"headless": True}]
    [executor] = FakeExecutor.made
    assert executor.vllm_config.parallel_config.master_addr == "leader.example"
    assert executor.monitored_inline is True
    assert executor.shut_down  # the workers ended: stop them all


def test_sigterm_stops_the_workers_and_restores_handlers() -> None:
    FakeExecutor.made.clear()
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit):
        run_headless_rank(FakeEngineArgs(), executor_factory=SignalledExecutor)
    [executor] = FakeExecutor.made
    assert executor.shut_down
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize(
    ("nnodes", "rank", "message"),
    [
        (1, 0, r"--nnodes N \(N >= 2\) and --node-rank 1..N-1 \(got --nnodes 1 --node-rank 0\)"),
        (2, 0, r"\(got --nnodes 2 --node-rank 0\)"),
        (2, 2, r"\(got --nnodes 2 --node-rank 2\)"),
    ],
)
def test_headless_is_refused_outside_a_non_leader_rank(
    nnodes: int, rank: int, message: str
) -> None:
    args = FakeEngineArgs(nnodes=nnodes, node_rank=rank)
    with pytest.raises(ConfigError, match=message):
        run_headless_rank(args, executor_factory=FakeExecutor)
    assert args.calls == []


def test_headless_data_parallel_engines_are_refused() -> None:
    with pytest.raises(ConfigError, match="headless data-parallel engines"):
        check_headless(FakeEngineArgs(data_parallel_size=2))


def test_vllm_rejecting_the_layout_is_a_config_error() -> None:
    class Rejecting(FakeEngineArgs):
        def create_engine_config(self, headless: bool = False) -> Any:
            raise ValueError("`--nnodes 2` must evenly divide the total world size (1)")

    with pytest.raises(ConfigError, match="vLLM rejected the engine arguments: `--nnodes 2`"):
        run_headless_rank(Rejecting(), executor_factory=FakeExecutor)
