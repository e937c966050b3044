"""Per-worker accounting of the requests a router has sent and not yet seen finish.

One `ActiveSequences` per (worker, dp rank): pending prefill tokens (until the first output
token) and active KV blocks, where a block shared by several requests (a common prefix) is
counted once. This is the load term of the KV router's cost (Dynamo's `ActiveSequences`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dynamo.runtime.errors import ConfigError


@dataclass(slots=True)
class _Request:
    seq_hashes: Sequence[int]
    prefill_tokens: int  # 0 once prefill is complete


class ActiveSequences:
    """Active requests of one worker key; see the module docstring."""

    def __init__(self, block_size: int) -> None:
        if block_size <= 1:
            raise ConfigError(f"KV block size must be > 1, got {block_size}")
        self.block_size = block_size
        self._requests: dict[str, _Request] = {}
        self._refs: dict[int, int] = {}  # sequence hash -> number of active requests holding it
        self._active_tokens = 0
        self._seen_at_last_check: set[str] = set()

    @property
    def active_blocks(self) -> int:
        """Distinct KV blocks held by the active requests."""
        return len(self._refs)

    @property
    def active_tokens(self) -> int:
        """Prompt tokens still waiting for prefill (requests without a first token yet)."""
        return self._active_tokens

    @property
    def num_requests(self) -> int:
        return len(self._requests)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._requests

    def new_tokens(self, isl: int, overlap_blocks: int) -> int:
        """Prompt tokens that must be prefilled given `overlap_blocks` cached leading blocks."""
        return max(0, isl - overlap_blocks * self.block_size)

    def add_request(
        self, request_id: str, seq_hashes: Sequence[int], isl: int, overlap_blocks: int
    ) -> None:
        """Start tracking a routed request (replacing an earlier one with the same id)."""
        if request_id in self._requests:
            self.free(request_id)
        prefill = self.new_tokens(isl, overlap_blocks)
        self._requests[request_id] = _Request(seq_hashes, prefill)
        self._active_tokens += prefill
        refs = self._refs
        for seq in seq_hashes:
            refs[seq] = refs.get(seq, 0) + 1

    def mark_prefill_completed(self, request_id: str) -> None:
        """The first output token arrived: the request's prompt is no longer pending."""
        req = self._requests.get(request_id)
        if req is not None:
            self._active_tokens -= req.prefill_tokens
            req.prefill_tokens = 0

    def free(self, request_id: str) -> bool:
        """The request ended (done, error, cancelled). Returns False if it was not active."""
        req = self._requests.pop(request_id, None)
        if req is None:
            return False
        self._active_tokens -= req.prefill_tokens
        refs = self._refs
        for seq in req.seq_hashes:
            count = refs[seq]
            if count > 1:
                refs[seq] = count - 1
            else:
                del refs[seq]
        return True

    def active_prefix(self, seq_hashes: Sequence[int]) -> int:
        """How many leading blocks of a request are already held by active requests.

        `seq_hashes` are chained sequence hashes, so a block can only be active if every block
        before it is (an active request holding block i holds the whole prefix up to i); that
        makes the count a binary search instead of a scan.
        """
        refs = self._refs
        n = len(seq_hashes)
        if not n or not refs or seq_hashes[0] not in refs:
            return 0
        if seq_hashes[-1] in refs:
            return n
        lo, hi = 1, n - 1  # seq_hashes[lo - 1] is active, seq_hashes[hi] is not
        while lo < hi:
            mid = (lo + hi) // 2
            if seq_hashes[mid] in refs:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def potential_blocks_and_tokens(
        self, seq_hashes: Sequence[int], isl: int, overlap_blocks: int
    ) -> tuple[int, int]:
        """(active blocks, pending prefill tokens) if this request were added here."""
        new_blocks = len(seq_hashes) - self.active_prefix(seq_hashes)
        return (
            new_blocks + self.active_blocks,
            self.new_tokens(isl, overlap_blocks) + self._active_tokens,
        )

    def expire_stale(self) -> list[str]:
        """Force-free requests that were already active at the previous call.

        Meant to run on a long period (Dynamo: 300 s) so that a lost `on_finish` cannot hold
        load on a worker for ever. Returns the freed request ids.
        """
        stale = [rid for rid in self._seen_at_last_check if rid in self._requests]
        for rid in stale:
            self.free(rid)
        self._seen_at_last_check = set(self._requests)
        return stale


ACTIVE_SEQUENCES_TOPIC = "active_sequences_events"
SyncKind = Literal["add", "prefill_done", "free"]
_SYNC_KINDS: tuple[SyncKind, ...] = ("add", "prefill_done", "free")


@dataclass(frozen=True, slots=True)
class ActiveSequenceEvent:
    """One router's change to a worker's active sequences, for `--router-replica-sync`.

    Replicas apply the events of other routers (by `router_id`) so every replica sees the
    load that all of them put on each worker.
    """

    router_id: str
    request_id: str
    worker_id: int
    dp_rank: int
    kind: SyncKind
    seq_hashes: tuple[int, ...] = ()
    isl: int = 0
    overlap_blocks: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {
            "router_id": self.router_id,
            "request_id": self.request_id,
            "worker_id": self.worker_id,
            "dp_rank": self.dp_rank,
            "kind": self.kind,
            "seq_hashes": list(self.seq_hashes),
            "isl": self.isl,
            "overlap_blocks": self.overlap_blocks,
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> ActiveSequenceEvent:
        kind = obj.get("kind")
        if kind not in _SYNC_KINDS:
            raise ValueError(f"unknown active-sequence event kind {kind!r}")
        return cls(
            router_id=str(obj["router_id"]),
            request_id=str(obj["request_id"]),
            worker_id=int(obj["worker_id"]),
            dp_rank=int(obj.get("dp_rank", 0)),
            kind=kind,
            seq_hashes=tuple(int(h) for h in obj.get("seq_hashes", ())),
            isl=int(obj.get("isl", 0)),
            overlap_blocks=int(obj.get("overlap_blocks", 0)),
        )
