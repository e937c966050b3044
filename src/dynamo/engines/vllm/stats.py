"""Engine load from vLLM's scheduler stats, captured by a vLLM stat logger.

vLLM calls every stat logger's `record(scheduler_stats, iteration_stats, ...)` after engine
steps; ours keeps the latest running/waiting counts, KV usage and prefix-cache hits per rank.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RankLoad:
    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0  # fraction of KV blocks in use
    prefix_queries: int = 0  # prompt tokens looked up in the prefix cache, cumulative
    prefix_hits: int = 0

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self.prefix_hits / self.prefix_queries if self.prefix_queries else 0.0


@dataclass
class SchedulerSnapshot:
    """Latest load per data-parallel rank."""

    ranks: dict[int, RankLoad] = field(default_factory=dict)

    def update(self, rank: int, stats: Any) -> bool:
        """Fold one vLLM `SchedulerStats` in; True when the load visibly changed."""
        load = self.ranks.setdefault(rank, RankLoad())
        before = (load.running, load.waiting, load.kv_cache_usage)
        load.running = int(getattr(stats, "num_running_reqs", 0))
        load.waiting = int(getattr(stats, "num_waiting_reqs", 0))
        load.kv_cache_usage = float(getattr(stats, "kv_cache_usage", 0.0))
        prefix = getattr(stats, "prefix_cache_stats", None)
        if prefix is not None:
            if getattr(prefix, "reset", False):
                load.prefix_queries = load.prefix_hits = 0
            load.prefix_queries += int(getattr(prefix, "queries", 0))
            load.prefix_hits += int(getattr(prefix, "hits", 0))
        return before != (load.running, load.waiting, load.kv_cache_usage)

    def per_rank(self, ranks: Iterable[int]) -> list[tuple[int, RankLoad]]:
        return [(r, self.ranks.get(r, RankLoad())) for r in ranks]


def make_stat_logger_factory(snapshot: SchedulerSnapshot, on_change: Callable[[], None]) -> Any:
    """A vLLM per-engine stat logger class that feeds `snapshot` (imports vLLM)."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class DynamoStatLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(
            self,
            scheduler_stats: Any,
            iteration_stats: Any,
            mm_cache_stats: Any = None,
            engine_idx: int = 0,
        ) -> None:
            if scheduler_stats is not None and snapshot.update(engine_idx, scheduler_stats):
                on_change()

        def log_engine_initialized(self) -> None:
            pass

    return DynamoStatLogger
