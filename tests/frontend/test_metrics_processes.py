"""`/metrics` of the frontend process over a real mocker process (KV router, file discovery)."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dynamo.testing.processes import Procs, mocker_args

pytestmark = pytest.mark.slow

MODEL = "tinymodel"


async def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_worker_series_of_a_live_mocker_and_their_removal(procs: Procs) -> None:
    url = await procs.frontend("--router-mode", "kv", "--kv-cache-block-size", "16")
    mocker = await procs.spawn(*mocker_args(num_workers=2, speedup_ratio=50))
    procs.drain(mocker)
    instances = await procs.wait_for_instances(url, 2)
    ids = sorted(int(str(i["instance_id"])) for i in instances)  # type: ignore[index]

    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as client:
        for i in range(4):
            stream = await client.completions.create(
                model=MODEL, prompt=f"request {i} " + "word " * 40, max_tokens=4, stream=True
            )
            async for _ in stream:
                pass

    series = await scrape(url)
    per_worker: dict[str, set[str]] = {}
    for name, labels in series:
        if name.startswith("dynamo_frontend_worker_"):
            label_map = dict(labels)
            assert set(label_map) == {"model", "worker_id", "dp_rank", "worker_type"}
            assert label_map["model"] == MODEL and label_map["worker_type"] == "decode"
            assert label_map["dp_rank"] == "0"
            per_worker.setdefault(label_map["worker_id"], set()).add(name)
    assert sorted(int(w) for w in per_worker) == ids
    for wid, names in per_worker.items():
        labels = frozenset({"model": MODEL, "worker_id": wid, "dp_rank": "0"}.items())
        labels |= {("worker_type", "decode")}
        # every request finished: the router holds nothing on any worker
        assert series[("dynamo_frontend_worker_active_decode_blocks", labels)] == 0
        assert series[("dynamo_frontend_worker_active_prefill_tokens", labels)] == 0
        if "dynamo_frontend_worker_last_time_to_first_token_seconds" in names:
            assert series[("dynamo_frontend_worker_last_time_to_first_token_seconds", labels)] > 0
            assert series[("dynamo_frontend_worker_last_input_sequence_tokens", labels)] > 40
    served = [
        w for w, names in per_worker.items()
        if "dynamo_frontend_worker_last_time_to_first_token_seconds" in names
    ]  # fmt: skip
    assert served  # at least one worker served a request
    model = frozenset({("model", MODEL)})
    assert series[("dynamo_frontend_model_workers", model)] == 2
    assert series[("dynamo_frontend_output_tokens_total", model)] == 16
    tokenize = frozenset({("operation", "tokenize")})
    assert series[("dynamo_frontend_tokenizer_latency_ms_count", tokenize)] == 4

    mocker.send_signal(signal.SIGTERM)  # a graceful stop unregisters both workers
    await mocker.wait()
    await procs.wait_for_instances(url, 0)
    # the model leaves with its last card, a separate discovery event from the instances'
    for _ in range(100):
        series = await scrape(url)
        if ("dynamo_frontend_model_workers", model) not in series:
            break
        await asyncio.sleep(0.1)
    assert not [name for name, _ in series if name.startswith("dynamo_frontend_worker_")]
    assert ("dynamo_frontend_model_workers", model) not in series
