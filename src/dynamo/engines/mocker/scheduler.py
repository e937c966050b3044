"""A pure, synchronous vLLM-like continuous-batching scheduler for the mocker.

Each `step()` is one forward pass: running requests first (decode tokens and prefill chunks),
then waiting requests in order while the token budget, `max_num_seqs` and the KV cache
(watermark) allow. A request reserves KV slots for all its known tokens when admitted and one
more slot each time decoding crosses a block boundary; when that fails, running requests are
preempted (recompute: their blocks go back to the cache and they wait at the front of the
queue). A request samples its next token when all its known tokens are computed. Per-step work
is proportional to the batch, never to the cache or the queue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence

from dynamo.engines.mocker.config import MockerConfig
from dynamo.engines.mocker.kv_cache import KvBlockManager
from dynamo.engines.mocker.sampling import TokenSampler
from dynamo.engines.mocker.sequence import (
    DONE,
    RUNNING,
    WAITING,
    Finished,
    SchedRequest,
    StepResult,
)
from dynamo.engines.mocker.timing import TimingModel
from dynamo.protocols.engine import FinishReason
from dynamo.protocols.hashing import block_hashes, sequence_hashes
from dynamo.protocols.kv_events import KvCacheEvent


class Scheduler:
    """Waiting/running queues over one rank's `KvBlockManager`."""

    def __init__(
        self,
        config: MockerConfig,
        sampler: TokenSampler,
        *,
        dp_rank: int = 0,
        on_event: Callable[[KvCacheEvent], None] | None = None,
        event_ids: Iterator[int] | None = None,
    ) -> None:
        self.config = config
        self.block_size = config.block_size
        self.max_len = config.effective_max_model_len
        self._sampler = sampler
        self._timing = TimingModel(config.speedup_ratio, config.decode_speedup_ratio)
        self._caching = config.enable_prefix_caching
        self._chunked = config.enable_chunked_prefill
        self._lifo = config.preemption_mode == "lifo"
        self._watermark_blocks = int(config.watermark * config.num_gpu_blocks)
        self.kv = KvBlockManager(
            config.num_gpu_blocks,
            config.block_size,
            enable_prefix_caching=config.enable_prefix_caching,
            dp_rank=dp_rank,
            on_event=on_event,
            event_ids=event_ids,
        )
        self._requests: dict[int, SchedRequest] = {}
        self._running: list[SchedRequest] = []
        self._waiting: deque[SchedRequest] = deque()  # aborted entries are skipped lazily
        self._num_waiting = 0
        self._pending_prefill = 0
        self._admitted_prompt_tokens = 0
        self._admitted_cached_tokens = 0
        self.simulated_time_s = 0.0  # sum of all step durations

    # --- queries ---------------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return self._num_waiting

    @property
    def pending_prefill_tokens(self) -> int:
        """Tokens still to prefill (waiting prompts and unfinished chunks)."""
        return self._pending_prefill

    @property
    def prefix_cache_hit_rate(self) -> float:
        if not self._admitted_prompt_tokens:
            return 0.0
        return self._admitted_cached_tokens / self._admitted_prompt_tokens

    def has_work(self) -> bool:
        return bool(self._running) or self._num_waiting > 0

    def get(self, key: int) -> SchedRequest | None:
        return self._requests.get(key)

    def running(self) -> list[SchedRequest]:
        return list(self._running)

    # --- requests in and out ---------------------------------------------------------
    def add_request(
        self,
        key: int,
        prompt: Sequence[int],
        *,
        seed: int,
        max_tokens: int | None = None,
        min_tokens: int = 0,
        stop_token_ids: Iterable[int] = (),
        eos_token_ids: Iterable[int] = (),
        ignore_eos: bool = False,
        remote_tokens: int = 0,
        script: Sequence[int] | None = None,
        prompt_hashes: tuple[Sequence[int], Sequence[int]] | None = None,
    ) -> SchedRequest:
        """Queue a request; the caller has checked that the prompt fits (`max_len`).

        `prompt_hashes`: (block hashes, sequence hashes) of the prompt's full blocks, when the
        caller computed them already (a decode worker checking transfer params does).

        `remote_tokens`: leading prompt tokens whose KV a prefill worker computed and this
        worker pulled; they are stored on admission (events, prefix reuse) without a prefill
        step, and the request's first step is a decode step (at most `len(prompt) - 1`).
        """
        if key in self._requests:
            raise ValueError(f"request key {key} already queued")
        if not 1 <= len(prompt) <= self.max_len:
            raise ValueError(f"prompt of {len(prompt)} tokens outside 1..{self.max_len}")
        room = max(1, self.max_len - len(prompt))
        req = SchedRequest(
            key,
            prompt,
            max_output=room if max_tokens is None else max(1, min(max_tokens, room)),
            min_tokens=max(0, min_tokens),
            stop_ids=frozenset(stop_token_ids),
            eos_ids=frozenset() if ignore_eos else frozenset(eos_token_ids),
            seed=seed,
            script=script,
            script_ends=not ignore_eos,
        )
        req.remote_tokens = max(0, min(remote_tokens, len(prompt) - 1))
        if prompt_hashes is not None:
            local, chained = prompt_hashes
            if len(local) != len(chained) or len(local) != len(prompt) // self.block_size:
                raise ValueError("prompt_hashes must cover the prompt's full blocks")
            req.local_hashes.extend(local)
            req.seq_hashes.extend(chained)
        self._requests[key] = req
        self._waiting.append(req)
        self._num_waiting += 1
        self._pending_prefill += self._pending_of(req)
        return req

    def abort(self, key: int) -> bool:
        """Drop a request wherever it is and free its blocks; False if unknown or finished."""
        req = self._requests.pop(key, None)
        if req is None:
            return False
        self._pending_prefill -= self._pending_of(req)
        if req.state == RUNNING:
            self._release(req)
            self._running.remove(req)
        else:
            self._num_waiting -= 1
        req.state = DONE
        return True

    # --- one forward pass ------------------------------------------------------------
    def step(self) -> StepResult:
        budget = self.config.max_num_batched_tokens
        scheduled: dict[SchedRequest, int] = {}
        preempted: list[int] = []
        budget = self._schedule_running(budget, scheduled, preempted)
        if not preempted:
            self._admit_waiting(budget, scheduled)
        kv_usage = self.kv.active_blocks / self.kv.num_blocks

        prefill_tokens = 0
        decoding = False
        emitted: list[tuple[int, int]] = []
        finished: list[Finished] = []
        for req, n in scheduled.items():
            start = req.num_computed
            if (
                n == 1
                and start == req.total_len - 1
                and start >= len(req.prompt) - bool(req.remote_tokens)
            ):
                decoding = True  # a transferred prompt's last token is the first decode step
            else:
                prefill_tokens += n
            self._pending_prefill -= self._pending_of(req)
            req.num_computed = start + n
            if self._caching:
                self._commit_full_blocks(req)
            if req.num_computed == req.total_len:
                token = self._next_token(req)
                req.output.append(token)
                emitted.append((req.key, token))
                reason = self._finish_reason(req, token)
                if reason is not None:
                    finished.append(self._finish(req, reason))
                    continue
            self._pending_prefill += self._pending_of(req)
        if finished:
            self._running = [r for r in self._running if r.state == RUNNING]
        duration_s = self._timing.step_s(prefill_tokens, decoding, kv_usage)
        self.simulated_time_s += duration_s
        return StepResult(
            batch=[(r.key, n) for r, n in scheduled.items()],
            emitted=emitted,
            finished=finished,
            preempted=preempted,
            prefill_tokens=prefill_tokens,
            kv_usage=kv_usage,
            duration_s=duration_s,
        )

    def _schedule_running(
        self, budget: int, scheduled: dict[SchedRequest, int], preempted: list[int]
    ) -> int:
        running = self._running
        bs = self.block_size
        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            n = req.total_len - req.num_computed
            if n > budget:
                if not self._chunked:
                    i += 1
                    continue
                n = budget
            need = -(-(req.num_computed + n) // bs) - req.held_blocks
            preempted_self = False
            while need > 0 and not self.kv.allocate(need):
                v = len(running) - 1 if self._lifo else 0
                victim = running.pop(v)
                budget += scheduled.pop(victim, 0)
                self._preempt(victim)
                preempted.append(victim.key)
                if victim is req:
                    preempted_self = True
                    break
                if v < i:
                    i -= 1
            if preempted_self:
                continue  # running[i] is now the next request
            if need > 0:
                req.private += need
            scheduled[req] = n
            budget -= n
            i += 1
        return budget

    def _admit_waiting(self, budget: int, scheduled: dict[SchedRequest, int]) -> None:
        waiting, kv, bs = self._waiting, self.kv, self.block_size
        while waiting and budget > 0 and len(self._running) < self.config.max_num_seqs:
            req = waiting[0]
            if req.state != WAITING:  # aborted while queued
                waiting.popleft()
                continue
            total = req.total_len
            hits = hits_inactive = 0
            if self._caching:
                self._extend_hashes(req, total // bs)
                hits, hits_inactive = kv.cached_prefix(req.seq_hashes, (total - 1) // bs)
            computed = max(hits * bs, req.remote_tokens)
            n = total - computed
            if n > budget:
                if not self._chunked:
                    break
                n = budget
            new_blocks = -(-total // bs) - hits
            cost = new_blocks + hits_inactive
            available = kv.available_blocks
            # The watermark keeps headroom for running requests; a lone request may use it all.
            if cost > available or (self._running and available - cost < self._watermark_blocks):
                break
            waiting.popleft()
            self._num_waiting -= 1
            self._pending_prefill -= self._pending_of(req)
            kv.acquire_cached(req.seq_hashes[:hits])
            if not kv.allocate(new_blocks):
                raise RuntimeError("admission check and allocation disagree")
            req.committed, req.private, req.num_computed = hits, new_blocks, computed
            req.state = RUNNING
            if self._caching and computed > hits * bs:
                self._commit_full_blocks(req)  # the transferred blocks enter the cache
            if req.cached_tokens is None:
                req.cached_tokens = hits * bs
                self._admitted_prompt_tokens += len(req.prompt)
                self._admitted_cached_tokens += hits * bs
            self._pending_prefill += self._pending_of(req)
            self._running.append(req)
            scheduled[req] = n
            budget -= n

    # --- helpers ---------------------------------------------------------------------
    def _extend_hashes(self, req: SchedRequest, upto_blocks: int) -> None:
        have = len(req.seq_hashes)
        if upto_blocks <= have:
            return
        bs = self.block_size
        local = block_hashes(req.tokens(have * bs, upto_blocks * bs), bs)
        if have:
            # sequence_hashes takes its first element as-is, so this continues the chain.
            chained = sequence_hashes([req.seq_hashes[-1], *local])[1:]
        else:
            chained = sequence_hashes(local)
        req.local_hashes.extend(local)
        req.seq_hashes.extend(chained)

    def _commit_full_blocks(self, req: SchedRequest) -> None:
        full = req.num_computed // self.block_size
        start = req.committed
        if full <= start:
            return
        self._extend_hashes(req, full)
        parent = req.seq_hashes[start - 1] if start else None
        self.kv.commit(
            parent, list(zip(req.seq_hashes[start:full], req.local_hashes[start:full], strict=True))
        )
        req.private -= full - start
        req.committed = full

    def _next_token(self, req: SchedRequest) -> int:
        i = len(req.output)
        if req.script is not None and i < len(req.script):
            return req.script[i]
        return self._sampler.token(req.seed, i)

    def _finish_reason(self, req: SchedRequest, token: int) -> FinishReason | None:
        n_out = len(req.output)
        if n_out >= req.min_tokens:
            if token in req.eos_ids:
                return "eos"
            if token in req.stop_ids:
                return "stop"
            if req.script is not None and n_out == len(req.script) and req.script_ends:
                return "eos"  # the canned text is all said (ignore_eos goes on sampling)
        if n_out >= req.max_output:
            return "length"
        return None

    def _finish(self, req: SchedRequest, reason: FinishReason) -> Finished:
        self._release(req)
        req.state = DONE
        self._requests.pop(req.key, None)
        return Finished(req.key, reason, len(req.prompt), len(req.output), req.cached_tokens or 0)

    def _preempt(self, req: SchedRequest) -> None:
        self._pending_prefill -= self._pending_of(req)
        self._release(req)
        req.num_computed = 0
        req.remote_tokens = 0  # its pulled KV is gone: recompute it here
        req.state = WAITING
        req.num_preemptions += 1
        self._waiting.appendleft(req)
        self._num_waiting += 1
        self._pending_prefill += self._pending_of(req)

    def _release(self, req: SchedRequest) -> None:
        if req.committed:
            self.kv.release(req.seq_hashes[: req.committed])
        self.kv.release_private(req.private)
        req.committed = req.private = 0

    @staticmethod
    def _pending_of(req: SchedRequest) -> int:
        if req.state == WAITING:
            return req.total_len - req.remote_tokens
        if req.state == DONE:
            return 0
        remaining = req.total_len - req.num_computed
        return remaining if remaining > 1 or req.num_computed < len(req.prompt) else 0

    def consistency_errors(self) -> list[str]:
        """Violated invariants across requests and the cache (O(cache); for tests)."""
        errors = self.kv.consistency_errors()
        holders: dict[int, int] = {}
        private = 0
        for req in self._running:
            for h in req.seq_hashes[: req.committed]:
                holders[h] = holders.get(h, 0) + 1
            private += req.private
            if req.held_blocks * self.block_size < req.num_computed:
                errors.append(f"request {req.key} computed tokens beyond its blocks")
        for h, n in holders.items():
            if self.kv.refcount(h) != n:
                errors.append(f"block {h:#x}: refcount {self.kv.refcount(h)}, {n} holders")
        if len(holders) + private != self.kv.active_blocks:
            errors.append("active blocks do not match what running requests hold")
        if private != self.kv.private_blocks:
            errors.append(f"private blocks {self.kv.private_blocks}, requests hold {private}")
        if not self._running and self.kv.active_blocks:
            errors.append(f"{self.kv.active_blocks} blocks active with nothing running")
        for req in self._waiting:
            if req.state == WAITING and req.held_blocks:
                errors.append(f"waiting request {req.key} holds blocks")
        return errors
