"""Shared pieces of the mocker tests: a config builder and a scheduler driver."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dynamo.engines.mocker.config import MockerConfig
from dynamo.engines.mocker.sampling import TokenSampler
from dynamo.engines.mocker.scheduler import Scheduler, StepResult
from dynamo.protocols.kv_events import KvCacheEvent

VOCAB = 1000
EOS = 2


def config(**overrides: Any) -> MockerConfig:
    base: dict[str, Any] = {
        "num_gpu_blocks": 64,
        "block_size": 4,
        "max_num_seqs": 8,
        "max_num_batched_tokens": 32,
        "watermark": 0.0,
    }
    base.update(overrides)
    return MockerConfig(**base)


@dataclass
class Driver:
    """A scheduler plus everything it emitted, checked for invariants on every step."""

    cfg: MockerConfig
    sampler: TokenSampler = field(default_factory=lambda: TokenSampler(VOCAB, [EOS]))
    events: list[KvCacheEvent] = field(default_factory=list)
    outputs: dict[int, list[int]] = field(default_factory=dict)
    finished: dict[int, Any] = field(default_factory=dict)
    steps: int = 0
    simulated_s: float = 0.0
    preemptions: int = 0

    def __post_init__(self) -> None:
        self.scheduler = Scheduler(self.cfg, self.sampler, on_event=self.events.append)

    def add(self, key: int, prompt: list[int], **kwargs: Any) -> None:
        kwargs.setdefault("seed", key)
        self.scheduler.add_request(key, prompt, **kwargs)

    def step(self) -> StepResult:
        s = self.scheduler
        result = s.step()
        self.steps += 1
        self.simulated_s += result.duration_s
        self.preemptions += len(result.preempted)
        errors = s.consistency_errors()
        assert errors == [], errors
        assert result.scheduled_tokens <= self.cfg.max_num_batched_tokens
        assert s.num_running <= self.cfg.max_num_seqs
        assert s.kv.active_blocks + s.kv.inactive_blocks <= self.cfg.num_gpu_blocks
        keys = [k for k, _ in result.emitted]
        assert len(keys) == len(set(keys)), "a request emitted two tokens in one step"
        for key, token in result.emitted:
            self.outputs.setdefault(key, []).append(token)
        for fin in result.finished:
            self.finished[fin.key] = fin
        return result

    def drain(self, max_steps: int = 20_000) -> None:
        while self.scheduler.has_work():
            self.step()
            assert self.steps < max_steps, "scheduler made no progress"
