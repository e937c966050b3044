"""A worker hosts its model's files: the card lists them by hash (a few KB for a 3 MB
tokenizer) and the status server serves them even after the model directory is gone."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from dynamo.engines.base import (
    EngineEventSink,
    EngineInfo,
    EngineMetrics,
    EngineOutput,
    EngineRequest,
)
from dynamo.protocols.model_card import ModelCard
from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.config import RuntimeConfig
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.errors import UnavailableError
from dynamo.runtime.hosted_files import file_url
from dynamo.runtime.transport.base import RequestContext
from dynamo.testing.big_model import write_big_model
from dynamo.worker.core import Worker
from dynamo.worker.model_card import build_model_card, read_tokenizer_facts
from dynamo.worker.model_files import MODEL_FILE_NAMES, host_model_files

INFO = EngineInfo(kv_block_size=16, total_kv_blocks=100, context_length=4096)


@pytest.fixture
async def runtime() -> AsyncIterator[DistributedRuntime]:
    config = RuntimeConfig(namespace=f"ns{uuid.uuid4().hex[:8]}", discovery_backend="mem")
    rt = await DistributedRuntime.create(config)
    yield rt
    await rt.shutdown(0)


async def test_a_3mb_tokenizer_gives_a_card_of_a_few_kb(
    runtime: DistributedRuntime, tmp_path: Path
) -> None:
    model = tmp_path / "big"
    write_big_model(model)
    originals = {name: (model / name).read_bytes() for name in MODEL_FILE_NAMES}
    assert len(originals["tokenizer.json"]) >= 3_000_000
    card = build_model_card("big", read_tokenizer_facts(model), INFO)
    card = await host_model_files(runtime, card, model)

    assert [f.name for f in card.files] == list(MODEL_FILE_NAMES)
    for f in card.files:
        assert f.size_bytes == len(originals[f.name])
        assert f.sha256 == hashlib.sha256(originals[f.name]).hexdigest()
    assert card.files_url == await runtime.files_url()
    encoded = json.dumps(card.model_dump(mode="json")).encode()
    assert len(encoded) < 4096, len(encoded)  # etcd takes 1.5 MB a request, a ConfigMap 1 MB
    assert ModelCard.model_validate_json(encoded) == card

    model.rename(tmp_path / "moved")  # the worker serves what it read at registration
    async with aiohttp.ClientSession() as s:
        for f in card.files:
            async with s.get(file_url(card.files_url, f.sha256)) as r:
                assert r.status == 200
                assert await r.read() == originals[f.name]


async def test_a_directory_without_model_files_leaves_the_card_as_it_was(
    runtime: DistributedRuntime, tmp_path: Path
) -> None:
    card = ModelCard(name="bare", source_path=str(tmp_path))
    assert await host_model_files(runtime, card, tmp_path) is card
    assert len(runtime.hosted_files) == 0


class _LateDirEngine:
    """Knows its model directory only once started, as a real engine resolving a hub id does."""

    def __init__(self, directory: Path) -> None:
        self._directory, self.started = directory, False

    @property
    def model_dir(self) -> str:
        if not self.started:
            raise UnavailableError("the engine has not started")
        return str(self._directory)

    async def start(self, sink: EngineEventSink) -> EngineInfo:
        self.started = True
        return INFO

    async def generate(
        self, request: EngineRequest, context: RequestContext
    ) -> AsyncIterator[EngineOutput]:
        yield EngineOutput(token_ids=[], finish_reason="stop")

    def metrics(self) -> list[EngineMetrics]:
        return []

    async def shutdown(self) -> None:
        self.started = False


async def test_a_worker_asks_for_its_model_directory_after_the_engine_started(
    runtime: DistributedRuntime, tmp_path: Path
) -> None:
    model = tmp_path / "big"
    write_big_model(model)
    engine = _LateDirEngine(model)
    worker = Worker(
        runtime,
        engine,
        EndpointAddress(runtime.config.namespace, "backend", "generate"),
        lambda info: build_model_card("big", read_tokenizer_facts(engine.model_dir), info),
        model_dir=lambda: engine.model_dir,
    )
    await worker.start()
    try:
        assert worker.card is not None
        assert [f.name for f in worker.card.files] == list(MODEL_FILE_NAMES)
    finally:
        await worker.stop()
