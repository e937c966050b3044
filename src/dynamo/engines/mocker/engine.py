"""`MockerEngine`: the simulated vLLM engine behind the `Engine` interface.

One asyncio task per data-parallel rank runs scheduler steps and sleeps each step's simulated
duration, so simulated time drives real time and concurrent requests share steps. `generate`
queues a request on a rank and streams its tokens as the steps produce them.

Steps are planned on a deadline: each ends at the previous step's planned end plus its
simulated duration, and an idle rank's first step starts when its request arrived. The
mocker's own CPU work (checking and hashing the prompt, the scheduler step) and sleeps that
wake late therefore come out of later sleeps instead of adding up (lag up to `MAX_LAG_S` is
made up); only the overshoot of the latest sleep shows.

The plan runs on `time.monotonic`, not on `loop.time()`: uvloop's loop time is whole
milliseconds (floored), so a sleep computed from it overshoots by the floored fraction, up to
1 ms, on top of uvloop's rounding of the sleep to whole milliseconds; the next step makes it
up, so consecutive token gaps jittered by up to ~1.5 ms each way instead of ~0.5 ms. The
sleeps themselves go through `PreciseTimer` (a helper thread per rank) for the same reason:
uvloop rounds every sleep to whole milliseconds.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING

from dynamo.engines.base import Engine, EngineEventSink, EngineInfo, EngineMetrics
from dynamo.engines.mocker.canned import CannedOutputs
from dynamo.engines.mocker.config import MockerConfig
from dynamo.engines.mocker.sampling import TokenSampler, seed_for
from dynamo.engines.mocker.scheduler import Scheduler
from dynamo.engines.mocker.sequence import Finished, SchedRequest, StepResult
from dynamo.engines.mocker.timer import PreciseTimer
from dynamo.engines.mocker.transfer import (
    DEFAULT_KV_BYTES_PER_TOKEN,
    KvLink,
    check_params,
    transfer_params,
)
from dynamo.protocols.engine import (
    EngineOutput,
    EngineRequest,
    FinishReason,
    KvTransferStats,
    Usage,
)
from dynamo.protocols.hashing import block_hashes, sequence_hashes
from dynamo.protocols.kv_events import KvCacheEvent
from dynamo.runtime.errors import (
    EngineShutdownError,
    InvalidRequestError,
    PromptTooLongError,
    UnavailableError,
)
from dynamo.runtime.transport.base import RequestContext

log = logging.getLogger(__name__)

# Sleeps overshoot; later steps sleep less to keep simulated and real time together, but
# never try to catch up more than this (after a stall, bursting would distort the timing).
MAX_LAG_S = 0.1
# A step that could schedule nothing (should not happen) waits this long before retrying.
STALL_RETRY_S = 0.001
# (block hashes, sequence hashes) of a prompt's full blocks
PromptHashes = tuple[list[int], list[int]]
# The clock of the step plan (see the module docstring for why not the loop's).
clock = time.monotonic


def plan_step(deadline: float, now: float, duration_s: float) -> tuple[float, float]:
    """(the step's planned end, how long to sleep for it) for a step of `duration_s` that
    follows a step planned to end at `deadline`, at `clock()` time `now`: the plan is exact
    (durations add up) and lag beyond `MAX_LAG_S` is dropped, not made up."""
    deadline = max(deadline, now - MAX_LAG_S) + duration_s
    return deadline, max(0.0, deadline - now)


class _Stream:
    """What one `generate` call is waiting for; filled by its rank's loop."""

    __slots__ = ("cancelled", "error", "final", "request", "tokens", "wake")

    def __init__(self, request: SchedRequest) -> None:
        self.request = request
        self.tokens: list[int] = []
        self.final: Finished | None = None
        self.cancelled = False
        self.error: Exception | None = None
        self.wake = asyncio.Event()


class _Rank:
    __slots__ = (
        "arrived",
        "dp_rank",
        "last_load",
        "scheduler",
        "streams",
        "task",
        "timer",
        "wake",
    )

    def __init__(self, dp_rank: int, scheduler: Scheduler) -> None:
        self.dp_rank = dp_rank
        self.scheduler = scheduler
        self.streams: dict[int, _Stream] = {}
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.timer = PreciseTimer()  # the step loop's sleeps (uvloop's are whole ms)
        self.last_load: tuple[int, int, int] = (0, 0, 0)
        # `clock()` time the first request reached the idle rank: its first step starts then
        self.arrived: float | None = None


class MockerEngine:
    """A GPU-free engine that behaves like a vLLM worker (see `docs/mocker.md`).

    `vocab_size` and `eos_token_ids` come from the model's tokenizer: outputs are valid ids
    of that vocabulary and never an EOS or one of `special_token_ids`, so, as in Dynamo's
    mocker, a request runs to `max_tokens` unless one of its `stop_token_ids` comes up.
    With `data_parallel_size` > 1 each rank has its own scheduler and KV cache; a request
    names its rank in `extra_args["dp_rank"]`, else it goes to the least loaded rank.
    With `canned` outputs, a prompt that matches one gets that text's tokens, then EOS.
    """

    def __init__(
        self,
        config: MockerConfig,
        vocab_size: int,
        eos_token_ids: Sequence[int] = (),
        *,
        special_token_ids: Iterable[int] = (),
        kv_bytes_per_token: int = DEFAULT_KV_BYTES_PER_TOKEN,
        canned: CannedOutputs | None = None,
    ) -> None:
        self.config = config
        self._canned = canned
        self.kv_bytes_per_token = kv_bytes_per_token
        self._link = KvLink(config.kv_transfer_bandwidth_gb_s, config.speedup_ratio)
        self.vocab_size = vocab_size
        self.eos_token_ids = tuple(eos_token_ids)
        self.max_len = config.effective_max_model_len
        sampler = TokenSampler(vocab_size, (*self.eos_token_ids, *special_token_ids))
        self._events: list[KvCacheEvent] = []
        self._ranks = [
            _Rank(
                r,
                Scheduler(config, sampler, dp_rank=r, on_event=self._events.append),
            )
            for r in range(config.data_parallel_size)
        ]
        self._keys = itertools.count()
        self._sink: EngineEventSink | None = None
        self._started = False
        self._closed = False

    # --- lifecycle -------------------------------------------------------------------
    async def start(self, sink: EngineEventSink) -> EngineInfo:
        if self._started:
            raise RuntimeError("MockerEngine.start called twice")
        self._sink = sink
        if self.config.startup_time_s:
            await asyncio.sleep(self.config.startup_time_s)
        for rank in self._ranks:
            rank.task = asyncio.create_task(self._run(rank), name=f"mocker-rank-{rank.dp_rank}")
        self._started = True
        return EngineInfo(
            kv_block_size=self.config.block_size,
            total_kv_blocks=self.config.num_gpu_blocks,
            context_length=self.max_len,
            max_num_seqs=self.config.max_num_seqs,
            max_num_batched_tokens=self.config.max_num_batched_tokens,
            data_parallel_size=self.config.data_parallel_size,
        )

    async def shutdown(self) -> None:
        """Stop the step loops; streams still open end with `EngineShutdownError`."""
        self._closed = True
        tasks = [r.task for r in self._ranks if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for rank in self._ranks:
            rank.task = None
            rank.timer.close()
            self._fail_streams(rank, EngineShutdownError("mocker engine is shutting down"))

    async def check_health(self) -> str | None:
        """Unhealthy once a rank's step loop has stopped while the engine was not shut down:
        its requests would never be stepped again."""
        if not self._started or self._closed:
            return None
        for rank in self._ranks:
            task = rank.task
            if task is not None and not task.done():
                continue
            if task is None or task.cancelled():
                why = "cancelled"
            else:
                error = task.exception()
                why = f"{type(error).__name__}: {error}" if error else "returned"
            return f"mocker rank {rank.dp_rank} step loop stopped ({why})"
        return None

    @property
    def schedulers(self) -> list[Scheduler]:
        """Each rank's scheduler (read it, do not drive it: the step loops own them)."""
        return [r.scheduler for r in self._ranks]

    def metrics(self) -> list[EngineMetrics]:
        return [
            EngineMetrics(
                active_kv_blocks=r.scheduler.kv.active_blocks,
                total_kv_blocks=r.scheduler.kv.num_blocks,
                running_requests=r.scheduler.num_running,
                waiting_requests=r.scheduler.num_waiting,
                max_num_seqs=self.config.max_num_seqs,
                active_prefill_tokens=r.scheduler.pending_prefill_tokens,
                prefix_cache_hit_rate=r.scheduler.prefix_cache_hit_rate,
                dp_rank=r.dp_rank,
            )
            for r in self._ranks
        ]

    # --- requests --------------------------------------------------------------------
    async def generate(
        self, request: EngineRequest, context: RequestContext
    ) -> AsyncIterator[EngineOutput]:
        if self._closed:
            raise EngineShutdownError("mocker engine is shutting down")
        if not self._started:
            raise UnavailableError("mocker engine is not started")
        rank = self._ranks[self._pick_rank(request)]
        if rank.task is None or rank.task.done():
            raise UnavailableError(f"mocker rank {rank.dp_rank} is not running")
        remote_tokens = 0
        transfer: KvTransferStats | None = None
        hashes: PromptHashes | None = None
        if self.config.mode != "prefill" and "disaggregated_params" in request:
            remote_tokens, transfer, hashes = await self._pull_kv(rank, request)
        arrived = clock()
        req = self._enqueue(rank, request, remote_tokens, hashes)
        stream = _Stream(req)
        rank.streams[req.key] = stream
        if rank.arrived is None:
            rank.arrived = arrived
        rank.wake.set()
        watcher = asyncio.create_task(_watch_context(context, stream))
        done = False
        sent = 0
        try:
            while True:
                await stream.wake.wait()
                stream.wake.clear()
                tokens, stream.tokens = stream.tokens, []
                sent += len(tokens)
                if stream.final is not None:
                    done = True
                    final = _final(tokens, stream.final.reason, req, sent)
                    if self.config.mode == "prefill":
                        full = len(req.prompt) // self.config.block_size
                        final["disaggregated_params"] = transfer_params(
                            req.prompt,
                            self.config.block_size,
                            now_s=time.time(),
                            keep_s=self.config.kv_transfer_keep_s,
                            # hashed by the scheduler already (when prefix caching is on)
                            hashes=req.seq_hashes[:full] if len(req.seq_hashes) >= full else None,
                        )
                    if transfer is not None:
                        final["kv_transfer"] = transfer
                    yield final
                    return
                if stream.error is not None:
                    done = True
                    raise stream.error
                if stream.cancelled:
                    rank.scheduler.abort(req.key)
                    done = True
                    yield _final(tokens, "cancelled", req, sent)
                    return
                if tokens:
                    if transfer is not None:
                        yield {"token_ids": tokens, "kv_transfer": transfer}
                        transfer = None
                    else:
                        yield {"token_ids": tokens}
        finally:
            watcher.cancel()
            rank.streams.pop(req.key, None)
            if not done:  # the caller closed the iterator or was cancelled
                rank.scheduler.abort(req.key)

    def _pick_rank(self, request: EngineRequest) -> int:
        extra = request.get("extra_args") or {}
        wanted = extra.get("dp_rank")
        if wanted is not None:
            if not isinstance(wanted, int) or not 0 <= wanted < len(self._ranks):
                raise InvalidRequestError(
                    f"dp_rank {wanted!r} is not in 0..{len(self._ranks) - 1}", param="dp_rank"
                )
            return wanted
        loads = [
            (r.scheduler.num_running + r.scheduler.num_waiting, r.scheduler.kv.active_blocks)
            for r in self._ranks
        ]
        return loads.index(min(loads))

    async def _pull_kv(
        self, rank: _Rank, request: EngineRequest
    ) -> tuple[int, KvTransferStats, PromptHashes]:
        """Check the request's transfer params and wait while the blocks this rank does not
        cache cross the link; (prompt tokens now computed, what the transfer cost, the
        prompt's hashes for the scheduler)."""
        tokens = self._check_tokens(request)
        bs = self.config.block_size
        local = block_hashes(tokens[: len(tokens) // bs * bs], bs)
        hashes = check_params(
            request.get("disaggregated_params"),
            tokens,
            bs,
            now_s=time.time(),
            hashes=sequence_hashes(local),
        )
        cached, _ = rank.scheduler.kv.cached_prefix(hashes, len(hashes))
        remote = len(tokens) - 1
        pulled = max(0, remote - cached * bs)
        nbytes = pulled * self.kv_bytes_per_token
        started = clock()
        delay = self._link.schedule(nbytes, started) - started
        if delay > 0:
            await asyncio.sleep(delay)
        stats: KvTransferStats = {"seconds": delay, "bytes": nbytes, "blocks": -(-pulled // bs)}
        return remote, stats, (local, hashes)

    def _check_tokens(self, request: EngineRequest) -> list[int]:
        tokens = request.get("token_ids")
        if not isinstance(tokens, list) or not tokens:
            raise InvalidRequestError("token_ids must be a non-empty list", param="token_ids")
        if len(tokens) > self.max_len:
            raise PromptTooLongError(
                f"prompt has {len(tokens)} tokens; this engine accepts at most {self.max_len} "
                f"({self._limit_reason()})",
                param="token_ids",
            )
        # set(map(type, ...)) runs in C: ~4x faster than a generator over 8k-token prompts
        if set(map(type, tokens)) != {int} or not (
            min(tokens) >= 0 and max(tokens) < self.vocab_size
        ):
            raise InvalidRequestError(
                f"token_ids must be integers in 0..{self.vocab_size - 1}", param="token_ids"
            )
        return tokens

    def _enqueue(
        self,
        rank: _Rank,
        request: EngineRequest,
        remote_tokens: int = 0,
        hashes: PromptHashes | None = None,
    ) -> SchedRequest:
        """Validate `request` and queue it on `rank`; bad input raises before anything runs.

        `remote_tokens` > 0: `_pull_kv` has already checked the tokens (and hashed them).
        """
        tokens = request["token_ids"] if remote_tokens else self._check_tokens(request)
        stop = request.get("stop_conditions") or {}
        max_tokens = stop.get("max_tokens")
        min_tokens = stop.get("min_tokens") or 0
        if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
            raise InvalidRequestError("max_tokens must be an integer >= 1", param="max_tokens")
        if type(min_tokens) is not int or min_tokens < 0:
            raise InvalidRequestError("min_tokens must be an integer >= 0", param="min_tokens")
        if max_tokens is not None and min_tokens > max_tokens:
            raise InvalidRequestError("min_tokens must not exceed max_tokens", param="min_tokens")
        eos = request.get("eos_token_ids")
        sampling = request.get("sampling_options") or {}
        return rank.scheduler.add_request(
            next(self._keys),
            tokens,
            seed=seed_for(request.get("request_id", ""), sampling.get("seed")),
            max_tokens=max_tokens,
            min_tokens=min_tokens,
            stop_token_ids=stop.get("stop_token_ids") or (),
            eos_token_ids=self.eos_token_ids if eos is None else eos,
            ignore_eos=bool(stop.get("ignore_eos", False)),
            remote_tokens=remote_tokens,
            script=self._canned.script_for(tokens) if self._canned else None,
            prompt_hashes=hashes,
        )

    def _limit_reason(self) -> str:
        cfg = self.config
        reasons = [f"KV cache of {cfg.capacity_tokens} tokens"]
        if cfg.max_model_len is not None:
            reasons.append(f"--max-model-len {cfg.max_model_len}")
        if not cfg.enable_chunked_prefill:
            reasons.append(
                f"--max-num-batched-tokens {cfg.max_num_batched_tokens} without chunked prefill"
            )
        return ", ".join(reasons)

    # --- the step loop ---------------------------------------------------------------
    async def _run(self, rank: _Rank) -> None:
        scheduler = rank.scheduler
        deadline: float | None = None  # planned end of the last step; None: the rank was idle
        try:
            while True:
                if not scheduler.has_work():
                    self._flush_events()
                    self._notify_load(rank)
                    rank.wake.clear()
                    rank.arrived = None
                    await rank.wake.wait()
                    deadline = None
                    continue
                if deadline is None:
                    started = clock()
                    deadline = started if rank.arrived is None else min(rank.arrived, started)
                result = scheduler.step()
                self._flush_events()
                delay = result.duration_s if result.batch else max(result.duration_s, STALL_RETRY_S)
                deadline, sleep_s = plan_step(deadline, clock(), delay)
                await rank.timer.sleep(sleep_s)
                if self._deliver(rank, result):
                    # Tokens out before the next step is computed: the woken streams send
                    # their frames in the next loop turn and the request plane writes them
                    # in the one after; a heavy next step (a prompt joining, its KV events)
                    # must not delay tokens already due. The plan's deadline does not move.
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
                self._notify_load(rank)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a scheduler bug: fail this rank's requests, not hang them
            log.exception("mocker rank %d failed", rank.dp_rank)
            self._fail_streams(rank, UnavailableError(f"mocker rank {rank.dp_rank} failed: {exc}"))
            raise

    def _deliver(self, rank: _Rank, result: StepResult) -> bool:
        """Hand the step's tokens and finishes to their streams; whether any stream woke."""
        streams = rank.streams
        woke = False
        for key, token in result.emitted:
            stream = streams.get(key)
            if stream is not None:
                stream.tokens.append(token)
                stream.wake.set()
                woke = True
        for finished in result.finished:
            stream = streams.get(finished.key)
            if stream is not None:
                stream.final = finished
                stream.wake.set()
                woke = True
        return woke

    def _fail_streams(self, rank: _Rank, error: Exception) -> None:
        for stream in rank.streams.values():
            stream.error = error
            stream.wake.set()

    def _flush_events(self) -> None:
        if not self._events:
            return
        events = self._events[:]
        self._events.clear()
        if self._sink is None:
            return
        for event in events:
            try:
                self._sink.kv_event(event)
            except Exception:
                log.exception("KV event sink failed")

    def _notify_load(self, rank: _Rank) -> None:
        s = rank.scheduler
        load = (s.num_running, s.num_waiting, s.kv.active_blocks)
        if load == rank.last_load or self._sink is None:
            return
        rank.last_load = load
        try:
            self._sink.load_changed()
        except Exception:
            log.exception("load sink failed")


async def _watch_context(context: RequestContext, stream: _Stream) -> None:
    await context.stopped()
    stream.cancelled = True
    stream.wake.set()


def _final(tokens: list[int], reason: FinishReason, req: SchedRequest, sent: int) -> EngineOutput:
    usage: Usage = {
        "prompt_tokens": len(req.prompt),
        "completion_tokens": sent,
        "cached_tokens": req.cached_tokens or 0,
    }
    return {"token_ids": tokens, "finish_reason": reason, "usage": usage}


if TYPE_CHECKING:

    def _conforms(engine: MockerEngine) -> Engine:  # mypy checks the protocol here
        return engine
