"""Serve `POST /v1/embeddings` for models whose workers registered the `embedding` type.

Contract with an embedding worker: it receives an `EngineRequest` whose `extra_args` has
`{"task": "embedding"}` and answers with one output `{"embedding": [float, ...],
"usage": {"prompt_tokens": n}}`.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson

from dynamo.frontend import responses as rs
from dynamo.frontend.engine_client import WORKER_WAIT_S
from dynamo.frontend.model_manager import ModelManager
from dynamo.frontend.preprocessor_cache import PreprocessorCache
from dynamo.frontend.protocol import EmbeddingRequest
from dynamo.protocols.engine import EngineRequest
from dynamo.runtime.errors import ConfigError, InvalidRequestError, RemoteError, UnavailableError


async def embed(
    req: EmbeddingRequest, models: ModelManager, preprocessors: PreprocessorCache
) -> bytes:
    """The response body for `req`; raises DynamoError subclasses for the HTTP error."""
    entry, routed = models.lookup(req.model)
    if not entry.serves("embedding"):
        raise InvalidRequestError(
            f"The model `{req.model}` does not serve embeddings (no worker registered the "
            "`embedding` model type)",
            param="model",
        )
    if not routed.worker_ids() and not await routed.wait_for_worker(WORKER_WAIT_S):
        raise UnavailableError(f"No worker of model `{req.model}` is ready; retry later")
    try:
        pre = await preprocessors.get(entry.card, entry.cards)
    except (ConfigError, UnavailableError) as exc:
        raise UnavailableError(f"The model `{req.model}` cannot be served: {exc}") from exc
    data: list[dict[str, Any]] = []
    prompt_tokens = 0
    for index, item in enumerate(req.inputs()):
        ids = pre.encode(item) if isinstance(item, str) else list(item)
        if not ids:
            raise InvalidRequestError(f"input[{index}]: must not be empty", param="input")
        pre.check_length(len(ids), None)
        request: EngineRequest = {
            "request_id": rs.new_id("embd"),
            "model": req.model,
            "token_ids": ids,
            "stop_conditions": {"max_tokens": 1},
            "sampling_options": {},
            "extra_args": {"task": "embedding"},
        }
        vector: list[float] | None = None
        async for out in routed.generate(request):
            raw: Any = out.get("embedding")
            if raw is not None:
                vector = [float(x) for x in raw]
        if vector is None:
            raise RemoteError("the worker returned no embedding")
        if req.dimensions is not None:
            vector = vector[: req.dimensions]
        prompt_tokens += len(ids)
        value: Any = vector
        if req.encoding_format == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": value})
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": req.model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
    )
