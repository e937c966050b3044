"""Per-request scheduling state of the mocker and what one scheduler step reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dynamo.protocols.engine import FinishReason

WAITING, RUNNING, DONE = "waiting", "running", "done"


class SchedRequest:
    """One request's scheduling state; `seq_hashes[:committed]` are the full blocks it holds."""

    __slots__ = (
        "cached_tokens",
        "committed",
        "eos_ids",
        "key",
        "local_hashes",
        "max_output",
        "min_tokens",
        "num_computed",
        "num_preemptions",
        "output",
        "private",
        "prompt",
        "remote_tokens",
        "script",
        "script_ends",
        "seed",
        "seq_hashes",
        "state",
        "stop_ids",
    )

    def __init__(
        self,
        key: int,
        prompt: Sequence[int],
        *,
        max_output: int,
        min_tokens: int,
        stop_ids: frozenset[int],
        eos_ids: frozenset[int],
        seed: int,
        script: Sequence[int] | None = None,
        script_ends: bool = True,
    ) -> None:
        self.key = key
        self.prompt = prompt
        self.output: list[int] = []
        self.max_output = max_output
        self.min_tokens = min_tokens
        self.stop_ids = stop_ids
        self.eos_ids = eos_ids
        self.seed = seed
        # Canned output: these tokens first, then the request ends (unless ignore_eos).
        self.script = script
        self.script_ends = script_ends
        self.seq_hashes: list[int] = []
        self.local_hashes: list[int] = []
        self.committed = 0
        self.private = 0
        self.num_computed = 0
        self.cached_tokens: int | None = None
        self.num_preemptions = 0
        # Prompt tokens whose KV arrived from a prefill worker (decode only; 0 after preemption).
        self.remote_tokens = 0
        self.state = WAITING

    @property
    def total_len(self) -> int:
        return len(self.prompt) + len(self.output)

    @property
    def held_blocks(self) -> int:
        return self.committed + self.private

    def tokens(self, start: int, end: int) -> Sequence[int]:
        p = len(self.prompt)
        if end <= p:
            return self.prompt[start:end]
        if start >= p:
            return self.output[start - p : end - p]
        return [*self.prompt[start:p], *self.output[: end - p]]


@dataclass(frozen=True, slots=True)
class Finished:
    key: int
    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


@dataclass(frozen=True, slots=True)
class StepResult:
    batch: list[tuple[int, int]]  # (request key, tokens computed this step)
    emitted: list[tuple[int, int]]  # (request key, new token id)
    finished: list[Finished]
    preempted: list[int]
    prefill_tokens: int  # new prompt / recompute tokens (the prefill polynomial's T)
    kv_usage: float  # active blocks / total blocks during the step
    duration_s: float  # simulated

    @property
    def scheduled_tokens(self) -> int:
        return sum(n for _, n in self.batch)
