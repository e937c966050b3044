"""KV cache events and worker load metrics in Dynamo's schema (`kv_router/protocols.rs`).

Wire form (JSON / msgpack):
  RouterEvent  {"worker_id": int, "event": KvCacheEvent}
  KvCacheEvent {"event_id": int, "data": {"stored": {...}} | {"removed": {...}} | "cleared",
                "dp_rank": int}
  stored       {"parent_hash": int | None, "blocks": [{"block_hash": int, "tokens_hash": int}]}
  removed      {"block_hashes": [int]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KV_EVENTS_TOPIC = "kv-events"
KV_METRICS_TOPIC = "kv_metrics"


@dataclass(frozen=True, slots=True)
class StoredBlock:
    block_hash: int  # the engine's own (external) hash of this block in its sequence
    tokens_hash: int  # LocalBlockHash: XXH3-64(seed 1337) of the block's token ids


@dataclass(frozen=True, slots=True)
class KvStored:
    parent_hash: int | None
    blocks: tuple[StoredBlock, ...]


@dataclass(frozen=True, slots=True)
class KvRemoved:
    block_hashes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class KvCleared:
    pass


KvEventData = KvStored | KvRemoved | KvCleared


@dataclass(frozen=True, slots=True)
class KvCacheEvent:
    event_id: int
    data: KvEventData
    dp_rank: int = 0


@dataclass(frozen=True, slots=True)
class RouterEvent:
    worker_id: int
    event: KvCacheEvent

    def to_wire(self) -> dict[str, Any]:
        data: Any
        d = self.event.data
        if isinstance(d, KvStored):
            data = {
                "stored": {
                    "parent_hash": d.parent_hash,
                    "blocks": [
                        {"block_hash": b.block_hash, "tokens_hash": b.tokens_hash} for b in d.blocks
                    ],
                }
            }
        elif isinstance(d, KvRemoved):
            data = {"removed": {"block_hashes": list(d.block_hashes)}}
        else:
            data = "cleared"
        return {
            "worker_id": self.worker_id,
            "event": {"event_id": self.event.event_id, "data": data, "dp_rank": self.event.dp_rank},
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> RouterEvent:
        ev = obj["event"]
        raw = ev["data"]
        data: KvEventData
        if raw == "cleared":
            data = KvCleared()
        elif "stored" in raw:
            s = raw["stored"]
            data = KvStored(
                s.get("parent_hash"),
                tuple(StoredBlock(b["block_hash"], b["tokens_hash"]) for b in s["blocks"]),
            )
        elif "removed" in raw:
            data = KvRemoved(tuple(raw["removed"]["block_hashes"]))
        else:
            raise ValueError(f"unknown KV event data: {raw!r}")
        return cls(
            int(obj["worker_id"]),
            KvCacheEvent(int(ev["event_id"]), data, int(ev.get("dp_rank", 0))),
        )


@dataclass(frozen=True, slots=True)
class LoadMetrics:
    """`ForwardPassMetrics`, flattened: one worker (dp rank)'s load, pushed periodically."""

    worker_id: int
    dp_rank: int = 0
    request_active_slots: int = 0
    request_total_slots: int = 0
    num_requests_waiting: int = 0
    kv_active_blocks: int = 0
    kv_total_blocks: int = 0
    active_prefill_tokens: int = 0
    gpu_prefix_cache_hit_rate: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gpu_cache_usage_perc(self) -> float:
        return self.kv_active_blocks / self.kv_total_blocks if self.kv_total_blocks else 0.0

    def to_wire(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "worker_stats": {
                "data_parallel_rank": self.dp_rank,
                "request_active_slots": self.request_active_slots,
                "request_total_slots": self.request_total_slots,
                "num_requests_waiting": self.num_requests_waiting,
            },
            "kv_stats": {
                "kv_active_blocks": self.kv_active_blocks,
                "kv_total_blocks": self.kv_total_blocks,
                "gpu_cache_usage_perc": self.gpu_cache_usage_perc,
                "gpu_prefix_cache_hit_rate": self.gpu_prefix_cache_hit_rate,
            },
            "active_prefill_tokens": self.active_prefill_tokens,
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> LoadMetrics:
        ws, kv = obj.get("worker_stats", {}), obj.get("kv_stats", {})
        return cls(
            worker_id=int(obj["worker_id"]),
            dp_rank=int(ws.get("data_parallel_rank") or 0),
            request_active_slots=int(ws.get("request_active_slots", 0)),
            request_total_slots=int(ws.get("request_total_slots", 0)),
            num_requests_waiting=int(ws.get("num_requests_waiting", 0)),
            kv_active_blocks=int(kv.get("kv_active_blocks", 0)),
            kv_total_blocks=int(kv.get("kv_total_blocks", 0)),
            active_prefill_tokens=int(obj.get("active_prefill_tokens", 0)),
            gpu_prefix_cache_hit_rate=float(kv.get("gpu_prefix_cache_hit_rate", 0.0)),
        )
