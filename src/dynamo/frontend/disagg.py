"""Disaggregated serving in the frontend: prefill on a prefill worker, decode on a decode worker.

While a model has prefill workers, `DisaggRouter.generate` sends each request first to one of
them (picked by the prefill pool's routing policy, the frontend's `--router-mode`) as a copy
with `max_tokens=1`, takes the `disaggregated_params` it returns and sends the request with
them to a decode worker. No prefill worker, a failed prefill, no params, or params the decode
worker rejects (`KvTransferError`) → the request is served aggregated on a decode worker and
counted, or, with `--enforce-disagg`, answered with 503. Conditional disaggregation keeps the
prefill on the decode worker when `plan_prefill` says so.

Bootstrap-style engines (SGLang) hand the KV over while both legs run: when the prefill
workers registered a bootstrap address, the prefill leg goes out with a fresh
`bootstrap_room`, and as soon as its worker is chosen the decode leg goes out with that
worker's `bootstrap_host`/`bootstrap_port` and the same room. The prefill leg is read to its
end beside the decode leg and cancelled with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace

from dynamo.frontend.disagg_metrics import DisaggMetrics
from dynamo.frontend.engine_client import RoutedModel
from dynamo.protocols.engine import EngineOutput, EngineRequest
from dynamo.protocols.model_card import BootstrapAddress
from dynamo.router.base import RouteRequest
from dynamo.runtime.errors import (
    DynamoError,
    InvalidRequestError,
    KvTransferError,
    UnavailableError,
)
from dynamo.runtime.tracing import span

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DisaggSettings:
    """The frontend's disaggregation flags (see `FrontendConfig`)."""

    enforce: bool = False
    conditional: bool = False
    max_local_prefill_tokens: int = 512
    max_prefill_queue: int = 4  # in-flight prefill legs per prefill worker


@dataclass(slots=True)
class DisaggRequest:
    """One request on its way through the prefill and decode pools of its model."""

    request: EngineRequest
    decode: RoutedModel
    prefill: RoutedModel | None  # None: the model never had a prefill worker
    kv_block_size: int
    backend_instance_id: int | None = None  # nvext direct routing (the decode leg)
    on_route: Callable[[int, int], None] | None = None  # hears the decode worker


def plan_prefill(
    settings: DisaggSettings,
    *,
    prefill_workers: int,
    prompt_tokens: int,
    cached_tokens: int,
    prefill_inflight: int,
) -> str | None:
    """Why the prefill stays on the decode worker, or None to send it to a prefill worker.

    `cached_tokens`: the prompt's prefix the chosen decode worker already holds.
    """
    if prefill_workers == 0:
        return "no_prefill_worker"
    if not settings.conditional:
        return None
    if prompt_tokens - cached_tokens <= settings.max_local_prefill_tokens:
        return "short_uncached_prompt"
    if prefill_inflight >= settings.max_prefill_queue * prefill_workers:
        return "prefill_queue_full"
    return None


def prefill_request(
    request: EngineRequest, params: dict[str, object] | None = None
) -> EngineRequest:
    """The prefill leg: the same prompt, one output token (and `params`, e.g. a room)."""
    stop = {**request["stop_conditions"], "max_tokens": 1, "min_tokens": None}
    out = {k: v for k, v in request.items() if k != "disaggregated_params"}
    out["stop_conditions"] = stop
    if params is not None:
        out["disaggregated_params"] = params
    return out  # type: ignore[return-value]


def new_bootstrap_room() -> int:
    """A fresh room: names one request's KV handoff at a prefill worker (63 bits, as SGLang)."""
    return secrets.randbits(63)


def bootstrap_params(address: BootstrapAddress, room: int) -> dict[str, object]:
    """The decode leg's `disaggregated_params` for a bootstrap-style prefill worker."""
    return {"bootstrap_host": address.host, "bootstrap_port": address.port, "bootstrap_room": room}


def decode_request(request: EngineRequest, params: dict[str, object]) -> EngineRequest:
    out = dict(request)
    out["disaggregated_params"] = params
    return out  # type: ignore[return-value]


class DisaggRouter:
    """Runs the two legs of each request of a model that has (had) prefill workers."""

    def __init__(self, settings: DisaggSettings, metrics: DisaggMetrics | None = None) -> None:
        self.settings = settings
        self._metrics = metrics
        self._inflight: dict[str, int] = {}  # model -> prefill legs in flight

    def generate(self, r: DisaggRequest) -> AsyncIterator[EngineOutput]:
        if r.prefill is None and not self.settings.enforce:  # a plain aggregated model
            return r.decode.generate(
                r.request, backend_instance_id=r.backend_instance_id, on_route=r.on_route
            )
        return self._generate(r)

    async def _generate(self, r: DisaggRequest) -> AsyncGenerator[EngineOutput, None]:
        model = r.decode.name
        local = self._local_reason(r)
        params: dict[str, object] | None = None
        if local is None and r.prefill is not None and r.prefill.uses_bootstrap:
            async with aclosing(self._bootstrapped(r, r.prefill)) as outputs:
                async for out in outputs:
                    yield out
            return
        if local is None and r.prefill is not None:
            params = await self._prefill(r, r.prefill)
        elif local is None or local == "no_prefill_worker":
            self._fallback(
                model,
                local or "no_prefill_worker",
                UnavailableError(f"no prefill worker of {model!r} is up"),
            )
        elif self._metrics is not None:
            self._metrics.local_prefills.labels(model, local).inc()
        if params is None:
            self._count_path(model, "aggregated")
            async with aclosing(self._decode(r, r.request)) as outputs:
                async for out in outputs:
                    yield out
            return
        started = False
        try:
            async with aclosing(self._decode(r, decode_request(r.request, params))) as outputs:
                async for out in outputs:
                    if not started:
                        started = True
                        self._count_path(model, "disaggregated")
                    yield out
        except KvTransferError as exc:
            if started:  # a worker that took the params cannot refuse them later
                raise
            self._fallback(model, "transfer_failed", exc)
            self._count_path(model, "aggregated")
            async with aclosing(self._decode(r, r.request)) as outputs:
                async for out in outputs:
                    yield out

    async def _bootstrapped(
        self, r: DisaggRequest, pool: RoutedModel
    ) -> AsyncGenerator[EngineOutput, None]:
        """Both legs at once: the decode leg starts when the prefill worker is chosen."""
        model = r.decode.name
        room = new_bootstrap_room()
        chosen: asyncio.Future[BootstrapAddress | None] = asyncio.get_running_loop().create_future()

        def on_route(instance_id: int, _dp_rank: int) -> None:
            if not chosen.done():
                chosen.set_result(pool.bootstrap_of(instance_id))

        leg = pool.generate(prefill_request(r.request, {"bootstrap_room": room}), on_route=on_route)
        prefill = asyncio.create_task(self._run_prefill_leg(model, leg))
        try:
            await asyncio.wait((chosen, prefill), return_when=asyncio.FIRST_COMPLETED)
            address = chosen.result() if chosen.done() else None
            failure = prefill.exception() if prefill.done() and not address else None
            if address is None:
                if isinstance(failure, InvalidRequestError):
                    raise failure
                cause = failure if isinstance(failure, DynamoError) else None
                self._fallback(
                    model,
                    "prefill_failed",
                    cause or UnavailableError("the prefill worker has no bootstrap address"),
                )
                self._count_path(model, "aggregated")
                async with aclosing(self._decode(r, r.request)) as outputs:
                    async for out in outputs:
                        yield out
                return
            decode = decode_request(r.request, bootstrap_params(address, room))
            async with aclosing(self._decode(r, decode)) as outputs:
                first = await self._first_while_prefilling(outputs, prefill)
                if first is None:
                    return
                self._count_path(model, "disaggregated")
                yield first
                async for out in outputs:
                    yield out
        finally:
            if not prefill.done():
                prefill.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await prefill  # its failure, if any, was logged or raised above

    @staticmethod
    async def _first_while_prefilling(
        outputs: AsyncIterator[EngineOutput], prefill: asyncio.Task[None]
    ) -> EngineOutput | None:
        """The decode leg's first output; a prefill leg that fails first fails the request
        (its decode worker would wait for KV that never comes)."""
        first = asyncio.ensure_future(anext(outputs, None))
        try:
            await asyncio.wait((first, prefill), return_when=asyncio.FIRST_COMPLETED)
            if not first.done() and prefill.exception() is not None:
                cause = prefill.exception()
                raise UnavailableError(
                    f"the prefill leg failed before the KV was handed over: {cause}"
                ) from cause
            return await first
        finally:
            if not first.done():
                first.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await first

    async def _run_prefill_leg(self, model: str, leg: AsyncGenerator[EngineOutput, None]) -> None:
        """Read a bootstrap-style prefill leg to its end (its worker sends the KV meanwhile)."""
        started = time.monotonic()
        self._inflight[model] = self._inflight.get(model, 0) + 1
        if self._metrics is not None:
            self._metrics.prefill_inflight.labels(model).inc()
        try:
            async with aclosing(leg) as outputs:
                async for _ in outputs:
                    pass
            if self._metrics is not None:
                self._metrics.prefill_duration.labels(model).observe(time.monotonic() - started)
        except DynamoError as exc:
            log.warning("model %s: the prefill leg failed: %s", model, exc)
            raise
        finally:
            self._inflight[model] -= 1
            if self._metrics is not None:
                self._metrics.prefill_inflight.labels(model).dec()

    def _local_reason(self, r: DisaggRequest) -> str | None:
        workers = len(r.prefill.worker_ids()) if r.prefill is not None else 0
        settings = self.settings
        if r.prefill is not None and r.prefill.uses_bootstrap and settings.conditional:
            # bootstrap-style decode workers (SGLang) cannot prefill: no local prefill
            settings = replace(settings, conditional=False)
        cached = 0
        if settings.conditional and workers:
            cached = self._cached_on_decode(r)
        return plan_prefill(
            settings,
            prefill_workers=workers,
            prompt_tokens=len(r.request["token_ids"]),
            cached_tokens=cached,
            prefill_inflight=self._inflight.get(r.decode.name, 0),
        )

    @staticmethod
    def _cached_on_decode(r: DisaggRequest) -> int:
        """Prompt tokens cached on the decode worker the KV router would pick (0 if unknown)."""
        preview = getattr(r.decode.policy, "preview", None)
        if preview is None:
            return 0
        route = RouteRequest(r.request["request_id"], r.request["token_ids"], r.backend_instance_id)
        try:
            decision = preview(route)
        except DynamoError:
            return 0
        return int(decision.overlap_blocks) * r.kv_block_size

    async def _prefill(self, r: DisaggRequest, pool: RoutedModel) -> dict[str, object] | None:
        """The prefill leg's transfer params; None (counted) when it failed and may fall back."""
        model = r.decode.name
        started = time.monotonic()
        params: dict[str, object] | None = None
        self._inflight[model] = self._inflight.get(model, 0) + 1
        if self._metrics is not None:
            self._metrics.prefill_inflight.labels(model).inc()
        try:
            with span("prefill", model=model):
                async with aclosing(pool.generate(prefill_request(r.request))) as outputs:
                    async for out in outputs:
                        found = out.get("disaggregated_params")
                        if found:
                            params = found
        except InvalidRequestError:
            raise  # the request itself is bad: a decode worker would refuse it too
        except DynamoError as exc:
            self._fallback(model, "prefill_failed", exc)
            return None
        finally:
            self._inflight[model] -= 1
            if self._metrics is not None:
                self._metrics.prefill_inflight.labels(model).dec()
        if params is None:
            self._fallback(
                model,
                "no_transfer_params",
                UnavailableError("the prefill worker returned no disaggregated_params"),
            )
            return None
        if self._metrics is not None:
            self._metrics.prefill_duration.labels(model).observe(time.monotonic() - started)
        return params

    async def _decode(
        self, r: DisaggRequest, request: EngineRequest
    ) -> AsyncGenerator[EngineOutput, None]:
        first = True
        with span("decode", model=r.decode.name):
            async with aclosing(
                r.decode.generate(
                    request, backend_instance_id=r.backend_instance_id, on_route=r.on_route
                )
            ) as outputs:
                async for out in outputs:
                    if first:
                        first = False
                        self._observe_transfer(r.decode.name, out)
                    yield out

    def _observe_transfer(self, model: str, out: EngineOutput) -> None:
        stats = out.get("kv_transfer")
        if stats is None or self._metrics is None:
            return
        self._metrics.kv_transfer_duration.labels(model).observe(float(stats["seconds"]))
        self._metrics.kv_transfer_bytes.labels(model).inc(int(stats["bytes"]))

    def _fallback(self, model: str, reason: str, cause: DynamoError) -> None:
        """Serve aggregated (counted), or with `--enforce-disagg` fail with 503."""
        if self.settings.enforce:
            raise UnavailableError(
                f"disaggregated serving of {model!r} failed ({reason}: {cause}) and "
                "--enforce-disagg forbids serving it aggregated"
            ) from cause
        log.warning("model %s: serving a request aggregated (%s: %s)", model, reason, cause)
        if self._metrics is not None:
            self._metrics.fallbacks.labels(model, reason).inc()

    def _count_path(self, model: str, path: str) -> None:
        if self._metrics is not None:
            self._metrics.requests.labels(model, path).inc()
