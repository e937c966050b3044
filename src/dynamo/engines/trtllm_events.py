"""TensorRT-LLM KV cache events and iteration stats, as our schema and load numbers.

`LLM.get_kv_cache_events_async` yields dicts such as
  {"event_id": 3, "data": {"type": "stored", "parent_hash": 7,
                           "blocks": [{"type": "stored_block", "block_hash": 9,
                                       "tokens": [{"type": "unique_token", "token_id": 1}, ...]}]}}
  {"event_id": 4, "data": {"type": "removed", "block_hashes": [9]}}
plus "created" / "updated" events the router does not need. `get_stats_async` yields per-
iteration dicts (or their JSON text) with `numActiveRequests`, `numQueuedRequests` and
`kvCacheStats` {`maxNumBlocks`, `usedNumBlocks`, `cacheHitRate`}.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from typing import Any

from dynamo.engines.zmq_kv_events import external_hash
from dynamo.protocols.hashing import block_hashes
from dynamo.protocols.kv_events import KvCacheEvent, KvCleared, KvRemoved, KvStored, StoredBlock

log = logging.getLogger(__name__)


class KvEventTranslator:
    """Our `KvCacheEvent`s, numbered consecutively, from TensorRT-LLM event dicts."""

    def __init__(self, block_size: int, dp_rank: int = 0) -> None:
        self.block_size = block_size
        self.dp_rank = dp_rank
        self._ids = itertools.count()

    def translate(self, raw: Any) -> list[KvCacheEvent]:
        if isinstance(raw, str):
            raw = json.loads(raw)
        data = raw.get("data") if isinstance(raw, dict) else None
        if not isinstance(data, dict):
            log.warning("ignoring malformed TensorRT-LLM KV event %r", raw)
            return []
        kind = data.get("type")
        dp_rank = int(raw.get("attention_dp_rank") or self.dp_rank)
        if kind == "stored":
            stored = self._stored(data)
            if stored is None:
                return []
            return [KvCacheEvent(next(self._ids), stored, dp_rank)]
        if kind == "removed":
            hashes = tuple(external_hash(h) for h in data.get("block_hashes") or ())
            return [KvCacheEvent(next(self._ids), KvRemoved(hashes), dp_rank)]
        if kind == "cleared":
            return [KvCacheEvent(next(self._ids), KvCleared(), dp_rank)]
        return []  # created / updated: not routing state

    def _stored(self, data: dict[str, Any]) -> KvStored | None:
        blocks: list[StoredBlock] = []
        for block in data.get("blocks") or ():
            tokens = [
                int(t["token_id"]) if isinstance(t, dict) else int(t)
                for t in block.get("tokens") or ()
            ]
            local = block_hashes(tokens, self.block_size)
            if len(local) != 1 or len(tokens) != self.block_size:
                continue  # only full blocks are shared, and each event block is one block
            blocks.append(StoredBlock(external_hash(block["block_hash"]), local[0]))
        if not blocks:
            return None
        parent = data.get("parent_hash")
        return KvStored(None if parent is None else external_hash(parent), tuple(blocks))


@dataclass
class StatsView:
    """The latest iteration stats of a TensorRT-LLM engine."""

    active_requests: int = 0
    queued_requests: int = 0
    used_blocks: int = 0
    max_blocks: int = 0
    cache_hit_rate: float = 0.0

    def update(self, stat: Any) -> bool:
        """Fold one stats record in; True when the load changed."""
        if isinstance(stat, str):
            stat = json.loads(stat)
        if not isinstance(stat, dict):
            return False
        before = (self.active_requests, self.queued_requests, self.used_blocks)
        self.active_requests = int(stat.get("numActiveRequests", self.active_requests))
        self.queued_requests = int(stat.get("numQueuedRequests", self.queued_requests))
        kv = stat.get("kvCacheStats") or {}
        self.used_blocks = int(kv.get("usedNumBlocks", self.used_blocks))
        self.max_blocks = int(kv.get("maxNumBlocks", self.max_blocks))
        self.cache_hit_rate = float(kv.get("cacheHitRate", self.cache_hit_rate))
        return before != (self.active_requests, self.queued_requests, self.used_blocks)
