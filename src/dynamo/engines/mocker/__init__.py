"""The mocker: a simulated vLLM engine (paged KV cache, continuous batching, Dynamo timing)."""

from dynamo.engines.mocker.config import MockerConfig
from dynamo.engines.mocker.engine import MockerEngine

__all__ = ["MockerConfig", "MockerEngine"]
