"""Fixtures: a live frontend on a real port over a `FakeRuntime`, and the official client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest
from tokenizers import Tokenizer

from dynamo.mocker.tinymodel import tiny_model_path
from dynamo.testing.fake_worker import FakeRuntime
from dynamo.testing.frontend_harness import Harness, start_frontend


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(f"{tiny_model_path()}/tokenizer.json")


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
async def harness(runtime: FakeRuntime) -> AsyncIterator[Harness]:
    frontend = await start_frontend(runtime, migration_limit=3)
    yield Harness(runtime, frontend)
    await frontend.stop()


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[openai.AsyncOpenAI]:
    c = openai.AsyncOpenAI(base_url=harness.url + "/v1", api_key="unused", max_retries=0)
    yield c
    await c.close()
