"""What every routing policy shares: the live workers, their pushed load, candidate filtering.

Candidates are worker keys `(instance_id, dp_rank)`. A request naming a backend instance
(nvext `backend_instance_id`) is confined to that instance in every mode; `exclude`d instances
are skipped; busy workers (pushed `LoadMetrics` over the thresholds) are dropped.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from dynamo.protocols.kv_events import LoadMetrics, RouterEvent
from dynamo.router.base import RouteRequest, WorkerInfo
from dynamo.router.config import RouterConfig
from dynamo.router.indexer import WorkerKey
from dynamo.router.selection import BusyThresholds, drop_busy
from dynamo.runtime.errors import ConfigError, NotFoundError, UnavailableError


class PolicyBase:
    """Worker registry and candidate filtering; subclasses implement `select`."""

    def __init__(self, config: RouterConfig | None = None, rng: random.Random | None = None):
        self.config = config or RouterConfig()
        self._rng = rng or random.Random()
        self._workers: dict[int, WorkerInfo] = {}
        self._metrics: dict[WorkerKey, LoadMetrics] = {}
        self.thresholds = BusyThresholds(
            self.config.active_decode_blocks_threshold,
            self.config.active_prefill_tokens_threshold,
        )

    # --- RoutingPolicy: workers and load ---------------------------------------------------
    def add_worker(self, worker: WorkerInfo) -> None:
        if worker.data_parallel_size < 1:
            raise ConfigError(
                f"worker {worker.instance_id:x}: data_parallel_size must be >= 1, "
                f"got {worker.data_parallel_size}"
            )
        self._workers[worker.instance_id] = worker

    def remove_worker(self, instance_id: int) -> None:
        self._workers.pop(instance_id, None)
        for key in [k for k in self._metrics if k[0] == instance_id]:
            del self._metrics[key]

    def workers(self) -> list[int]:
        return sorted(self._workers)

    def apply_load(self, metrics: LoadMetrics) -> None:
        if metrics.worker_id in self._workers:
            self._metrics[(metrics.worker_id, metrics.dp_rank)] = metrics

    def apply_kv_event(self, event: RouterEvent) -> None:
        """Only the KV policy uses KV events."""

    def on_first_token(self, request_id: str) -> None:
        """Only the KV policy tracks requests."""

    def on_finish(self, request_id: str) -> None:
        """Only the KV policy tracks requests."""

    def set_busy_thresholds(
        self,
        active_decode_blocks: float | None = None,
        active_prefill_tokens: int | None = None,
    ) -> BusyThresholds:
        """Change the busy thresholds at runtime (Dynamo's `/busy_threshold`)."""
        if active_decode_blocks is not None and not 0 <= active_decode_blocks <= 1:
            raise ConfigError(
                f"active_decode_blocks_threshold must be in [0, 1], got {active_decode_blocks}"
            )
        if active_prefill_tokens is not None and active_prefill_tokens < 0:
            raise ConfigError(
                f"active_prefill_tokens_threshold must be >= 0, got {active_prefill_tokens}"
            )
        self.thresholds = BusyThresholds(active_decode_blocks, active_prefill_tokens)
        return self.thresholds

    # --- helpers for subclasses ------------------------------------------------------------
    def block_size(self, instance_id: int) -> int:
        """The router-wide override, else the worker's model-card block size."""
        return self.config.kv_cache_block_size or self._workers[instance_id].kv_block_size

    def candidates(self, request: RouteRequest) -> list[WorkerKey]:
        """Worker keys the request may go to, or the error that says why there are none."""
        target = request.backend_instance_id
        if target is not None:
            info = self._workers.get(target)
            if info is None:
                raise NotFoundError(f"backend instance {target} is not a known worker")
            if target in request.exclude:
                raise UnavailableError(f"backend instance {target} is excluded for this request")
            infos = [info]
        else:
            if not self._workers:
                raise UnavailableError("no workers are available")
            infos = [w for i, w in sorted(self._workers.items()) if i not in request.exclude]
            if not infos:
                raise UnavailableError(
                    f"all {len(self._workers)} workers are excluded for this request"
                )
        keys = [(w.instance_id, r) for w in infos for r in range(w.data_parallel_size)]
        t = self.thresholds
        if t.active_decode_blocks is None and t.active_prefill_tokens is None:
            return keys
        return drop_busy(keys, t, self._metrics, self._total_blocks(keys))

    def load_metrics(self) -> Mapping[WorkerKey, LoadMetrics]:
        return self._metrics

    def _total_blocks(self, keys: list[WorkerKey]) -> dict[WorkerKey, int | None]:
        return {k: self._workers[k[0]].total_kv_blocks for k in keys}
