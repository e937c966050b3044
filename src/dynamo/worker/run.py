"""Run workers as a process: register, serve until a signal, drain, exit with a clear status."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry

from dynamo.engines.base import Engine, EngineInfo
from dynamo.protocols.model_card import ModelCard, WorkerRole
from dynamo.protocols.parsers.flags import ParserFlags
from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.config import RuntimeConfig
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.errors import ConfigError, DynamoError
from dynamo.runtime.lifecycle import run_until_signal
from dynamo.runtime.observability import setup_observability
from dynamo.worker.core import Worker
from dynamo.worker.metrics import ComponentMetrics
from dynamo.worker.model_card import build_model_card, read_tokenizer_facts

log = logging.getLogger(__name__)

BuildWorkers = Callable[[DistributedRuntime, ComponentMetrics], list[Worker]]


def setup_logging(component: str = "worker") -> None:
    """Logs (`DYN_LOG`, `DYN_LOGGING_JSONL`) and traces (`OTEL_*`) of a worker process; a bad
    setting exits 2 with one line."""
    try:
        setup_observability(component)
    except ConfigError as exc:
        print(f"{component}: error: {exc}", file=sys.stderr)
        sys.exit(2)


def run_workers(prog: str, runtime_config: RuntimeConfig, build: BuildWorkers) -> None:
    """Start the workers `build` makes, serve until SIGTERM/SIGINT, drain, then exit.

    Exit status: 0 after a clean drain, 1 when serving failed, 2 on a configuration error
    (printed as one line, no traceback).
    """
    registry = CollectorRegistry()
    metrics = ComponentMetrics(registry)

    async def serve(runtime: DistributedRuntime) -> None:
        workers = build(runtime, metrics)
        try:
            await asyncio.gather(*(w.start() for w in workers))
            await asyncio.Event().wait()  # serve until the drain cancels us
        finally:
            for worker in workers:
                with contextlib.suppress(Exception):
                    await worker.stop()

    try:
        code = run_until_signal(serve, runtime_config, registry=registry)
    except DynamoError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)


class ModelEngine(Engine, Protocol):
    """A real engine that loaded a model directory (tokenizer files for the model card)."""

    @property
    def served_model_name(self) -> str: ...

    @property
    def model_dir(self) -> str: ...

    @property
    def hub_repo(self) -> str | None:
        """The hub repo the model came from, if any (frontends may fetch files from it)."""


def serve_engine(
    prog: str,
    runtime_config: RuntimeConfig,
    engine: ModelEngine,
    *,
    role: WorkerRole,
    endpoint: str | None = None,
    component: str = "backend",
    publish_kv_events: bool = True,
    migration_limit: int = 0,
    parsers: ParserFlags | None = None,
) -> None:
    """Serve one real engine at `endpoint` (default `dyn://{ns}.{component}.generate`;
    prefill workers `dyn://{ns}.prefill.generate`). Decode workers publish KV events too: the
    router reads them for conditional disaggregation and KV-aware decode routing."""
    if endpoint:
        address = EndpointAddress.parse(endpoint)
    else:
        default = "prefill" if role is WorkerRole.PREFILL else component
        address = EndpointAddress(runtime_config.namespace, default, "generate")

    def make_card(info: EngineInfo) -> ModelCard:
        facts = read_tokenizer_facts(engine.model_dir)
        card = build_model_card(
            engine.served_model_name,
            facts,
            info,
            role=role,
            source_path=engine.model_dir,
            hub_repo=engine.hub_repo,
        )
        update: dict[str, object] = {"migration_limit": migration_limit}
        if parsers is not None:
            update.update(parsers.card_fields())
        return card.model_copy(update=update)

    def build(runtime: DistributedRuntime, metrics: ComponentMetrics) -> list[Worker]:
        publish = publish_kv_events
        return [
            Worker(
                runtime,
                engine,
                address,
                make_card,
                metrics=metrics,
                publish_kv_events=publish,
                model_dir=lambda: engine.model_dir,  # known once the engine started
            )
        ]

    run_workers(prog, runtime_config, build)
