"""`--router-mode kv`: send each request where its prompt is cached, weighed against load.

Per request: hash the prompt's full blocks, look up each worker's cached leading blocks in the
prefix index (fed by KV events, or by the router's own decisions in approximate mode), add each
worker's active-sequence load, and pick the lowest `overlap_weight * prefill_blocks +
decode_blocks`, the overlap credited `--router-kv-overlap-score-credit` times, more when every
worker is queued (`--router-kv-overlap-score-credit-queue-scale`, `selection.py`).
The choice is then booked as an active sequence on that worker until `on_finish`.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dynamo.protocols.hashing import block_hashes, sequence_hashes
from dynamo.protocols.kv_events import RouterEvent
from dynamo.router.active_sequences import ActiveSequenceEvent, ActiveSequences, SyncKind
from dynamo.router.approx import ApproxIndexer
from dynamo.router.base import RouteRequest, RoutingDecision, WorkerInfo
from dynamo.router.config import RouterConfig
from dynamo.router.indexer import KvIndexer, WorkerKey
from dynamo.router.policy_base import PolicyBase
from dynamo.router.selection import Candidate, select_candidate

STALE_CHECK_S = 300.0  # Dynamo force-frees requests still active after two such periods
_TOMBSTONES = 1024  # removed instance ids whose late KV events are ignored


# A prompt at least this long keeps its hashes for the next routing of the same list object.
REUSE_MIN_TOKENS = 512


class _LastPrompt:
    """Block and sequence hashes of the last long prompt scored (one per process). A
    disaggregated request routes its prompt, the same list each time, up to three times: the
    decode pool's preview, the prefill leg and the decode leg (~0.2 ms of hashing each at 8k
    tokens). One tuple (list, length, block size, hashes), so a thread reads a consistent one;
    holding the list keeps its identity from passing to another. The frontend never changes a
    routed prompt in place (a migrated request gets a new list)."""

    last: tuple[Sequence[int] | None, int, int, tuple[int, ...], tuple[int, ...]] = (
        None,
        0,
        0,
        (),
        (),
    )


def prompt_hashes(token_ids: Sequence[int], block_size: int) -> tuple[list[int], list[int]]:
    """(block hashes, sequence hashes) of `token_ids`, reused for the last long prompt."""
    ids, n, bs, local_kept, seqs_kept = _LastPrompt.last
    if token_ids is ids and len(token_ids) == n and block_size == bs:
        return list(local_kept), list(seqs_kept)
    local = block_hashes(token_ids, block_size)
    seqs = sequence_hashes(local)
    if type(token_ids) is list and len(token_ids) >= REUSE_MIN_TOKENS:
        _LastPrompt.last = (token_ids, len(token_ids), block_size, tuple(local), tuple(seqs))
    return local, seqs


@dataclass(frozen=True, slots=True)
class KvRouterStats:
    """A snapshot for metrics (`dynamo_frontend_kv_hit_rate`, worker load gauges, ...)."""

    decisions: int
    overlap_blocks_total: int  # predicted cached blocks over all decisions
    required_blocks_total: int  # ceil(isl / block_size) over all decisions
    last_overlap_blocks: int
    last_required_blocks: int
    events_applied: int
    events_ignored: int  # approximate mode, or from workers that left discovery
    event_gaps: int
    worker_resets: int
    missing_parents: int
    unknown_removals: int
    index_size: int  # (worker, block) pairs
    index_nodes: int  # distinct blocks
    approx_expired: int
    approx_pruned: int
    active_decode_blocks: dict[WorkerKey, int] = field(default_factory=dict)
    active_prefill_tokens: dict[WorkerKey, int] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float:
        """Predicted prefix-cache hit rate: overlap blocks / required blocks, cumulative."""
        if not self.required_blocks_total:
            return 0.0
        return self.overlap_blocks_total / self.required_blocks_total

    @property
    def last_hit_rate(self) -> float:
        if not self.last_required_blocks:
            return 0.0
        return self.last_overlap_blocks / self.last_required_blocks


@dataclass(slots=True)
class _Hashes:
    local: list[int]
    seqs: list[int]
    scores: dict[WorkerKey, int]
    tree_sizes: dict[WorkerKey, int]


class KvPolicy(PolicyBase):
    """KV-aware routing; see the module docstring. Implements `RoutingPolicy`."""

    def __init__(
        self,
        config: RouterConfig | None = None,
        rng: random.Random | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        router_id: str = "",
        publish: Callable[[ActiveSequenceEvent], None] | None = None,
    ) -> None:
        super().__init__(config, rng)
        cfg = self.config
        self.indexer = KvIndexer()
        self.approx: ApproxIndexer | None = None
        if not cfg.kv_events:
            self.approx = ApproxIndexer(
                self.indexer,
                ttl_s=cfg.router_ttl_s,
                max_tree_size=cfg.router_max_tree_size,
                prune_target_ratio=cfg.router_prune_target_ratio,
                clock=clock,
            )
        self.router_id = router_id or f"router-{random.getrandbits(48):012x}"
        self._publish = publish if cfg.router_replica_sync else None
        self._clock = clock
        self._active: dict[WorkerKey, ActiveSequences] = {}
        self._requests: dict[str, WorkerKey] = {}
        self._removed: deque[int] = deque()
        self._removed_set: set[int] = set()
        self._next_stale_check = clock() + STALE_CHECK_S
        self._decisions = self._overlap_total = self._required_total = 0
        self._last_overlap = self._last_required = 0
        self._events_ignored = 0

    # --- workers and events ----------------------------------------------------------------
    def add_worker(self, worker: WorkerInfo) -> None:
        old = self._workers.get(worker.instance_id)
        super().add_worker(worker)
        self._removed_set.discard(worker.instance_id)
        block_size = self.block_size(worker.instance_id)
        if old is not None and (
            old.data_parallel_size != worker.data_parallel_size
            or old.kv_block_size != worker.kv_block_size
        ):
            self._drop_active(worker.instance_id)
        for rank in range(worker.data_parallel_size):
            if (worker.instance_id, rank) not in self._active:
                self._active[(worker.instance_id, rank)] = ActiveSequences(block_size)

    def remove_worker(self, instance_id: int) -> None:
        if instance_id in self._workers:
            self._removed.append(instance_id)
            self._removed_set.add(instance_id)
            if len(self._removed) > _TOMBSTONES:
                self._removed_set.discard(self._removed.popleft())
        super().remove_worker(instance_id)
        self.indexer.remove_worker(instance_id)
        if self.approx is not None:
            self.approx.remove_worker(instance_id)
        self._drop_active(instance_id)

    def apply_kv_event(self, event: RouterEvent) -> None:
        """Index a worker's KV event (ignored in approximate mode and after its removal)."""
        if self.approx is not None or event.worker_id in self._removed_set:
            self._events_ignored += 1
            return
        self.indexer.apply_event(event)

    # --- routing ---------------------------------------------------------------------------
    def select(self, request: RouteRequest) -> RoutingDecision:
        chosen, hashes = self._choose(request)
        key, bs = chosen.key, chosen.block_size
        h = hashes[bs]
        isl = len(request.token_ids)
        self._book(request.request_id, key, h.seqs, isl, chosen.overlap_blocks)
        if self.approx is not None:
            self.approx.record(key, h.local, h.seqs)
        required = math.ceil(isl / bs)
        self._decisions += 1
        self._overlap_total += chosen.overlap_blocks
        self._required_total += required
        self._last_overlap, self._last_required = chosen.overlap_blocks, required
        return RoutingDecision(key[0], key[1], chosen.overlap_blocks, required)

    def preview(self, request: RouteRequest) -> RoutingDecision:
        """What `select` would decide now, without booking the request (a dry run)."""
        chosen, _ = self._choose(request)
        required = math.ceil(len(request.token_ids) / chosen.block_size)
        return RoutingDecision(chosen.key[0], chosen.key[1], chosen.overlap_blocks, required)

    def set_sync_publisher(self, publish: Callable[[ActiveSequenceEvent], None] | None) -> None:
        """Publish this router's active-sequence changes through `publish` (replica sync)."""
        self._publish = publish

    def potential_loads(self, token_ids: Sequence[int]) -> list[Candidate]:
        """Per eligible worker key, the figures a request would be scored with (no booking)."""
        keys = self.candidates(RouteRequest("", token_ids))
        return self._score(token_ids, keys)[0]

    def on_first_token(self, request_id: str) -> None:
        key = self._requests.get(request_id)
        if key is not None and key in self._active:
            self._active[key].mark_prefill_completed(request_id)
            self._sync(request_id, key, "prefill_done")

    def on_finish(self, request_id: str) -> None:
        key = self._requests.pop(request_id, None)
        if key is not None and key in self._active:
            self._active[key].free(request_id)
            self._sync(request_id, key, "free")

    def apply_sync_event(self, event: ActiveSequenceEvent) -> None:
        """Apply another router replica's active-sequence change (own events are ignored)."""
        if event.router_id == self.router_id:
            return
        active = self._active.get((event.worker_id, event.dp_rank))
        if active is None:
            return
        if event.kind == "add":
            seqs = (
                event.seq_hashes
                if self.config.assume_kv_reuse
                else self._random_hashes(len(event.seq_hashes))
            )
            active.add_request(event.request_id, seqs, event.isl, event.overlap_blocks)
        elif event.kind == "prefill_done":
            active.mark_prefill_completed(event.request_id)
        else:
            active.free(event.request_id)

    # --- metrics ---------------------------------------------------------------------------
    def stats(self) -> KvRouterStats:
        s = self.indexer.stats
        a = self.approx.stats if self.approx is not None else None
        return KvRouterStats(
            decisions=self._decisions,
            overlap_blocks_total=self._overlap_total,
            required_blocks_total=self._required_total,
            last_overlap_blocks=self._last_overlap,
            last_required_blocks=self._last_required,
            events_applied=s.events_applied,
            events_ignored=self._events_ignored,
            event_gaps=s.gaps,
            worker_resets=s.resets,
            missing_parents=s.missing_parents,
            unknown_removals=s.unknown_removals,
            index_size=self.indexer.size,
            index_nodes=self.indexer.num_nodes,
            approx_expired=a.expired if a else 0,
            approx_pruned=a.pruned if a else 0,
            active_decode_blocks={k: v.active_blocks for k, v in self._active.items()},
            active_prefill_tokens={k: v.active_tokens for k, v in self._active.items()},
        )

    # --- internals -------------------------------------------------------------------------
    def _choose(self, request: RouteRequest) -> tuple[Candidate, dict[int, _Hashes]]:
        keys = self.candidates(request)
        self._housekeeping()
        weight = request.overlap_score_weight
        if weight is None:
            weight = self.config.kv_overlap_score_weight
        temperature = request.router_temperature
        if temperature is None:
            temperature = self.config.router_temperature
        cands, hashes = self._score(request.token_ids, keys)
        cfg = self.config
        chosen = select_candidate(
            cands,
            overlap_weight=weight,
            temperature=temperature,
            rng=self._rng,
            overlap_credit=cfg.kv_overlap_score_credit,
            overlap_credit_decay=cfg.kv_overlap_score_credit_decay,
            overlap_credit_queue_scale=cfg.kv_overlap_score_credit_queue_scale,
            request_blocks=math.ceil(len(request.token_ids) / cands[0].block_size) if cands else 1,
        )
        return chosen, hashes

    def _score(
        self, token_ids: Sequence[int], keys: list[WorkerKey]
    ) -> tuple[list[Candidate], dict[int, _Hashes]]:
        if self.approx is not None:
            self.approx.expire()
        isl = len(token_ids)
        track, reuse = self.config.track_active_blocks, self.config.assume_kv_reuse
        hashes: dict[int, _Hashes] = {}
        cands: list[Candidate] = []
        active_of = self._active
        for key in keys:
            active = active_of[key]
            bs = active.block_size
            h = hashes.get(bs)
            if h is None:
                local, seqs = prompt_hashes(token_ids, bs)
                match = self.indexer.find_matches_seq(seqs)
                h = hashes[bs] = _Hashes(local, seqs, match.scores, match.tree_sizes)
            overlap = h.scores.get(key, 0)
            tokens = isl - overlap * bs
            if tokens < 0:
                tokens = 0
            blocks = len(h.seqs)
            pending = 0
            if track:
                if reuse:
                    blocks -= active.active_prefix(h.seqs)
                blocks += active.active_blocks
                pending = active.active_tokens
                tokens += pending
            cands.append(
                Candidate(key, bs, overlap, tokens, blocks, h.tree_sizes.get(key, 0), pending)
            )
        return cands, hashes

    def _book(
        self, request_id: str, key: WorkerKey, seqs: list[int], isl: int, overlap: int
    ) -> None:
        if request_id in self._requests:  # routed again (e.g. migrated): release the old one
            self.on_finish(request_id)
        if not self.config.track_active_blocks:
            return
        booked = seqs if self.config.assume_kv_reuse else self._random_hashes(len(seqs))
        self._active[key].add_request(request_id, booked, isl, overlap)
        self._requests[request_id] = key
        self._sync(request_id, key, "add", seqs, isl, overlap)

    def _sync(
        self,
        request_id: str,
        key: WorkerKey,
        kind: SyncKind,
        seqs: Sequence[int] = (),
        isl: int = 0,
        overlap: int = 0,
    ) -> None:
        if self._publish is not None:
            self._publish(
                ActiveSequenceEvent(
                    self.router_id, request_id, key[0], key[1], kind, tuple(seqs), isl, overlap
                )
            )

    def _random_hashes(self, n: int) -> list[int]:
        """`--no-assume-kv-reuse`: unique hashes, so no block is shared with another request."""
        return [self._rng.getrandbits(64) for _ in range(n)]

    def _drop_active(self, instance_id: int) -> None:
        for key in [k for k in self._active if k[0] == instance_id]:
            del self._active[key]
        for rid in [r for r, k in self._requests.items() if k[0] == instance_id]:
            del self._requests[rid]

    def _housekeeping(self) -> None:
        now = self._clock()
        if now < self._next_stale_check:
            return
        self._next_stale_check = now + STALE_CHECK_S
        for active in self._active.values():
            for rid in active.expire_stale():
                self._requests.pop(rid, None)
