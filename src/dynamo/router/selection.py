"""Pure worker selection: the KV cost function, tie-breaking, softmax sampling, busy filtering.

cost = overlap_weight * max(raw_prefill_blocks - credit * overlap_blocks, 0) + decode_blocks,
lower is better (Dynamo's `DefaultWorkerSelector`, 1.6.1): `raw_prefill_blocks` is the worker's
pending prefill tokens plus this whole prompt, in blocks; `decode_blocks` its active KV blocks
with this request. `overlap_weight` is Dynamo's prefill load scale (the older overlap score
weight); `credit` is the overlap score credit (1 in Dynamo; `RouterConfig` defaults to 4).

Two adjustments of the credit (`effective_credit`):

- the queue scale (ours; a credit of 1 or less is left alone): the part above 1 grows with
  the queue every candidate has, `credit - 1` times `1 + queue_scale * least_pending_blocks /
  request_blocks`; at scale 1 a worker holding the whole prompt keeps it while its pending
  prefill stays below `credit` times the least loaded worker's (this request included), a
  ratio instead of a margin;
- the decay (Dynamo's): divided by `1 + decay * excess / request_blocks` when a worker's pending
  prefill exceeds the least loaded candidate's by `excess` blocks.

With credit 1 and decay 0 this is the original `overlap_weight * prefill_blocks + decode_blocks`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from dynamo.protocols.kv_events import LoadMetrics
from dynamo.runtime.errors import OverloadedError

K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class Candidate:
    """One worker key's figures for one request (not frozen: built 64 times per decision)."""

    key: tuple[int, int]
    block_size: int
    overlap_blocks: int  # leading blocks of the request already cached there
    prefill_tokens: int  # pending prefill tokens if the request went there
    decode_blocks: int  # active KV blocks if the request went there
    tree_size: int = 0  # blocks the worker holds in the index (tie-break)
    active_prefill_tokens: int = 0  # pending prefill tokens there before this request

    def cost(self, overlap_weight: float, overlap_credit: float = 1.0) -> float:
        """The candidate's cost; `overlap_credit` is the (decayed) overlap score credit.

        `prefill_tokens` already nets one credit of the overlap out of the raw prefill load.
        """
        prefill_blocks = self.prefill_tokens / self.block_size
        if overlap_credit != 1.0:
            prefill_blocks = max(prefill_blocks - (overlap_credit - 1.0) * self.overlap_blocks, 0.0)
        return overlap_weight * prefill_blocks + self.decode_blocks


def effective_credit(
    credit: float,
    *,
    queue_scale: float = 0.0,
    least_pending_blocks: float = 0.0,
    excess_blocks: float = 0.0,
    decay: float = 0.0,
    request_blocks: int = 1,
) -> float:
    """The overlap credit one candidate is scored with (see the module docstring).

    `least_pending_blocks`: the smallest pending prefill (blocks) over all candidates, the queue
    no choice avoids; `excess_blocks`: this candidate's pending prefill above it.
    """
    per_request = max(request_blocks, 1)
    if queue_scale > 0 and credit > 1.0:
        credit = 1.0 + (credit - 1.0) * (1.0 + queue_scale * least_pending_blocks / per_request)
    if decay > 0:
        credit /= 1.0 + decay * excess_blocks / per_request
    return credit


def candidate_costs(
    candidates: Sequence[Candidate],
    overlap_weight: float,
    overlap_credit: float = 1.0,
    overlap_credit_decay: float = 0.0,
    request_blocks: int = 1,
    overlap_credit_queue_scale: float = 0.0,
) -> list[float]:
    """The cost of every candidate; the credit's adjustments compare pending prefill across
    `candidates`."""
    adjust = overlap_credit_decay > 0 or (overlap_credit_queue_scale > 0 and overlap_credit > 1)
    if not adjust or not candidates:
        return [c.cost(overlap_weight, overlap_credit) for c in candidates]
    least = min(c.active_prefill_tokens / c.block_size for c in candidates)
    if overlap_credit_decay <= 0:  # one credit for all: it depends on the shortest queue only
        credit = effective_credit(
            overlap_credit,
            queue_scale=overlap_credit_queue_scale,
            least_pending_blocks=least,
            request_blocks=request_blocks,
        )
        return [c.cost(overlap_weight, credit) for c in candidates]
    costs = []
    for c in candidates:
        credit = effective_credit(
            overlap_credit,
            queue_scale=overlap_credit_queue_scale,
            least_pending_blocks=least,
            excess_blocks=c.active_prefill_tokens / c.block_size - least,
            decay=overlap_credit_decay,
            request_blocks=request_blocks,
        )
        costs.append(c.cost(overlap_weight, credit))
    return costs


def select_candidate(
    candidates: Sequence[Candidate],
    *,
    overlap_weight: float,
    temperature: float,
    rng: random.Random,
    overlap_credit: float = 1.0,
    overlap_credit_decay: float = 0.0,
    request_blocks: int = 1,
    overlap_credit_queue_scale: float = 0.0,
) -> Candidate:
    """Pick the cheapest candidate, or softmax-sample.

    Ties go to the smallest tree, then to a random one (Dynamo's rule). With a credit above 1,
    the candidate holding more of the prompt comes first: that credit clamps the prefill cost
    of every worker holding enough of the prompt to 0, so at credit 4 a worker holding a
    quarter of the prompt would tie with one holding all of it, and the smaller tree would win.
    """
    if not candidates:
        raise ValueError("select_candidate needs at least one candidate")
    costs = candidate_costs(
        candidates,
        overlap_weight,
        overlap_credit,
        overlap_credit_decay,
        request_blocks,
        overlap_credit_queue_scale,
    )
    if temperature > 0:
        return candidates[softmax_sample(costs, temperature, rng)]
    best = min(costs)
    tied = [c for c, cost in zip(candidates, costs, strict=True) if cost == best]
    if len(tied) > 1 and overlap_credit > 1.0:
        most = max(c.overlap_blocks for c in tied)
        tied = [c for c in tied if c.overlap_blocks == most]
    if len(tied) > 1:
        smallest = min(c.tree_size for c in tied)
        tied = [c for c in tied if c.tree_size == smallest]
    return tied[0] if len(tied) == 1 else rng.choice(tied)


def softmax_probabilities(costs: Sequence[float], temperature: float) -> list[float]:
    """P(i) ~ exp(-(cost_i / (max - min)) / T); uniform when all costs are equal."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    hi, lo = max(costs), min(costs)
    if hi == lo:
        return [1.0 / len(costs)] * len(costs)
    span = hi - lo
    scores = [-(c / span) / temperature for c in costs]
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    total = sum(weights)
    return [w / total for w in weights]


def softmax_sample(costs: Sequence[float], temperature: float, rng: random.Random) -> int:
    probs = softmax_probabilities(costs, temperature)
    x = rng.random()
    acc = 0.0
    for i, p in enumerate(probs):
        acc += p
        if x < acc:
            return i
    return len(probs) - 1


@dataclass(frozen=True, slots=True)
class BusyThresholds:
    """Dynamo's busy filter; None disables a check."""

    active_decode_blocks: float | None = None  # fraction (0-1) of the worker's KV blocks
    active_prefill_tokens: int | None = None  # absolute token count

    def is_busy(self, metrics: LoadMetrics | None, total_kv_blocks: int | None = None) -> bool:
        """Busy by the worker's last pushed metrics; a worker with none is never busy."""
        if metrics is None:
            return False
        if self.active_decode_blocks is not None:
            total = metrics.kv_total_blocks or total_kv_blocks
            if total and metrics.kv_active_blocks > self.active_decode_blocks * total:
                return True
        return (
            self.active_prefill_tokens is not None
            and metrics.active_prefill_tokens > self.active_prefill_tokens
        )


def drop_busy(
    keys: Iterable[K],
    thresholds: BusyThresholds,
    metrics: Mapping[K, LoadMetrics],
    total_kv_blocks: Mapping[K, int | None],
) -> list[K]:
    """The keys that are not busy; OverloadedError when there were some and all are busy."""
    keys = list(keys)
    if thresholds.active_decode_blocks is None and thresholds.active_prefill_tokens is None:
        return keys
    free = [k for k in keys if not thresholds.is_busy(metrics.get(k), total_kv_blocks.get(k))]
    if keys and not free:
        raise OverloadedError(f"all {len(keys)} candidate workers are over their busy thresholds")
    return free
