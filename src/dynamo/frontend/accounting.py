"""The metrics of one chat/completion request: TTFT, ITL, tokens and its outcome, once."""

from __future__ import annotations

import time
from typing import Any

from dynamo.frontend import responses as rs
from dynamo.frontend.detokenize import TextStream
from dynamo.frontend.metrics import ModelMetrics, WorkerLast


class RequestAccounting:
    """Metrics of one request, its outcome recorded exactly once by `done`."""

    __slots__ = (
        "cached",
        "endpoint",
        "last",
        "mm",
        "prompt",
        "recorded",
        "start",
        "stream",
        "text",
        "tokens",
        "worker",
    )

    def __init__(
        self, mm: ModelMetrics, endpoint: str, stream: bool, prompt: int, text: TextStream
    ) -> None:
        self.mm = mm
        self.endpoint = endpoint
        self.stream = stream
        self.prompt = prompt
        self.text = text
        self.tokens = 0
        self.cached = 0
        self.worker: WorkerLast | None = None  # the per-worker gauges of the current worker
        self.start = self.last = time.monotonic()
        self.recorded = False
        mm.inflight.inc()
        mm.queued.inc()

    def routed(self, instance_id: int, dp_rank: int) -> None:
        self.worker = self.mm.parent.worker_last(self.mm.model, instance_id, dp_rank)

    def first_output(self) -> None:
        now = time.monotonic()
        self.mm.queued.dec()
        self.mm.ttft.observe(now - self.start)
        worker = self.worker
        if worker is not None:
            worker.ttft_s = now - self.start
            worker.isl = self.prompt
        self.last = now

    def more_tokens(self, n: int) -> None:
        now = time.monotonic()
        itl = (now - self.last) / n
        self.mm.itl.observe(itl)
        if self.worker is not None:
            self.worker.itl_s = itl
        self.last = now

    def add_tokens(self, n: int) -> None:
        self.tokens += n
        self.mm.output_tokens += n

    def done(self, error_type: str | None, *, started: bool) -> None:
        """Record the outcome: `error_type` is None for success, else the metric label."""
        if self.recorded:
            return
        self.recorded = True
        mm = self.mm
        if not started:
            mm.queued.dec()
        mm.inflight.dec()
        mm.duration.observe(time.monotonic() - self.start)
        mm.request_done(self.endpoint, self.stream, error_type)
        detokenize_ms = self.text.mean_step_ms()
        if detokenize_ms is not None:
            mm.parent.detokenize_ms.observe(detokenize_ms)
        if error_type is None:
            mm.tokens_done(self.prompt, self.tokens, self.cached)

    def usage(self) -> dict[str, Any]:
        return rs.usage_dict(self.prompt, self.tokens, min(self.cached, self.prompt))
