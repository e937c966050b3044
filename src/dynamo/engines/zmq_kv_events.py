"""Convert vLLM-format KV event batches (vLLM's and SGLang's ZMQ publisher) to Dynamo's schema.

A publisher sends multipart messages `(topic, seq: u64 big-endian, payload)`; the payload is a
msgpack `KVEventBatch` array `[ts, events, dp_rank]`. Each event is a tagged msgspec struct,
encoded as a map with a "type" key (vLLM >= 0.11) or as an array whose first item is the tag
(older vLLM, SGLang): `BlockStored`, `BlockRemoved` or `AllBlocksCleared`.

vLLM's own block hashes become our `block_hash`; our `tokens_hash` is recomputed from the
stored token ids with Dynamo's block hashing, so the router can match prompts against them.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from dynamo.protocols.hashing import XXH3_SEED, block_hashes, salted_seed
from dynamo.protocols.kv_events import (
    KvCacheEvent,
    KvCleared,
    KvEventData,
    KvRemoved,
    KvStored,
    StoredBlock,
)

log = logging.getLogger(__name__)

_U64 = (1 << 64) - 1
# Positional fields of the array form, after the tag (vLLM's field order).
_STORED_FIELDS = (
    "block_hashes",
    "parent_block_hash",
    "token_ids",
    "block_size",
    "lora_id",
    "medium",
    "lora_name",
)
_REMOVED_FIELDS = ("block_hashes", "medium")
# Storage tiers other than device memory (CPU offload, disk) are not what the router scores.
_DEVICE_MEDIA = {None, "GPU", "gpu"}


class KvEventFormatError(ValueError):
    """A payload that is not a vLLM KV event batch."""


def external_hash(value: Any) -> int:
    """A vLLM block hash (int, possibly negative, or bytes) as an unsigned 64-bit int."""
    if isinstance(value, bool):
        raise KvEventFormatError(f"block hash {value!r} is not an int or bytes")
    if isinstance(value, int):
        return value & _U64
    if isinstance(value, bytes | bytearray):
        # vLLM's own int conversion: the big-endian integer truncated to 64 bits.
        return int.from_bytes(value, "big") & _U64
    raise KvEventFormatError(f"block hash {value!r} is not an int or bytes")


def _as_record(raw: Any, fields: Sequence[str]) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, list | tuple):
        return dict(zip(fields, raw[1:], strict=False))
    raise KvEventFormatError(f"KV event {raw!r} is neither a map nor an array")


def _tag(raw: Any) -> str:
    if isinstance(raw, dict):
        tag = raw.get("type")
    elif isinstance(raw, list | tuple) and raw:
        tag = raw[0]
    else:
        tag = None
    if isinstance(tag, bytes):
        tag = tag.decode()
    if not isinstance(tag, str):
        raise KvEventFormatError(f"KV event {raw!r} has no type tag")
    return tag


def convert_event(raw: Any) -> KvEventData | None:
    """One vLLM event as Dynamo event data; None for events the router does not track."""
    tag = _tag(raw)
    if tag == "AllBlocksCleared":
        return KvCleared()
    if tag == "BlockRemoved":
        rec = _as_record(raw, _REMOVED_FIELDS)
        if rec.get("medium") not in _DEVICE_MEDIA:
            return None
        return KvRemoved(tuple(external_hash(h) for h in rec.get("block_hashes") or ()))
    if tag == "BlockStored":
        return _convert_stored(_as_record(raw, _STORED_FIELDS))
    log.debug("ignoring KV event of type %s", tag)
    return None


def _convert_stored(rec: dict[str, Any]) -> KvStored | None:
    if rec.get("medium") not in _DEVICE_MEDIA or rec.get("group_idx") not in (None, 0):
        return None
    hashes = [external_hash(h) for h in rec.get("block_hashes") or ()]
    tokens = list(rec.get("token_ids") or ())
    block_size = rec.get("block_size")
    if not isinstance(block_size, int) or block_size <= 0:
        raise KvEventFormatError(f"BlockStored has no valid block_size: {block_size!r}")
    lora = rec.get("lora_name")
    seed = salted_seed(lora) if isinstance(lora, str) and lora else XXH3_SEED
    local = block_hashes(tokens, block_size, seed=seed)
    if len(local) != len(hashes):
        # Should not happen: vLLM sends each block's tokens. Keep the blocks we can hash.
        log.warning(
            "BlockStored has %d hashes but %d full blocks of tokens", len(hashes), len(local)
        )
    n = min(len(local), len(hashes))
    if n == 0:
        return None
    parent = rec.get("parent_block_hash")
    return KvStored(
        None if parent is None else external_hash(parent),
        tuple(StoredBlock(hashes[i], local[i]) for i in range(n)),
    )


def decode_batch(payload: bytes) -> tuple[int, list[Any]]:
    """(dp_rank, raw events) of one msgpack `KVEventBatch` payload."""
    try:
        batch = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData) as exc:
        raise KvEventFormatError(f"undecodable KV event batch: {exc}") from exc
    if isinstance(batch, dict):  # a map-encoded batch
        events, dp_rank = batch.get("events"), batch.get("data_parallel_rank")
    elif isinstance(batch, list | tuple) and len(batch) >= 2:
        events = batch[1]
        dp_rank = batch[2] if len(batch) > 2 else None
    else:
        raise KvEventFormatError(f"KV event batch {batch!r} is not [ts, events, dp_rank]")
    if not isinstance(events, list):
        raise KvEventFormatError("KV event batch has no event list")
    return (int(dp_rank) if isinstance(dp_rank, int) else 0), events


@dataclass
class KvEventConverter:
    """Turns publisher payloads into `KvCacheEvent`s with consecutive ids per dp rank.

    The router treats a gap in event ids as a reset, so ids count only the events we emit.
    """

    default_dp_rank: int = 0

    def __post_init__(self) -> None:
        self._ids: dict[int, Iterator[int]] = {}

    def convert(self, payload: bytes) -> list[KvCacheEvent]:
        dp_rank, raw_events = decode_batch(payload)
        dp_rank = dp_rank or self.default_dp_rank
        ids = self._ids.setdefault(dp_rank, itertools.count())
        out: list[KvCacheEvent] = []
        for raw in raw_events:
            data = convert_event(raw)
            if data is not None:
                out.append(KvCacheEvent(next(ids), data, dp_rank))
        return out
