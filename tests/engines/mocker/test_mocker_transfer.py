"""The mocker's simulated KV transfer: transfer params, their checks, the link, and a decode
worker's scheduler taking a transferred prompt without a prefill step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _mocker_helpers import Driver, config

from dynamo.engines.mocker.timing import TimingModel
from dynamo.engines.mocker.transfer import (
    DEFAULT_KV_BYTES_PER_TOKEN,
    KvLink,
    check_params,
    kv_bytes_per_token,
    prompt_hashes,
    transfer_params,
)
from dynamo.mocker.tinymodel import tiny_model_path
from dynamo.protocols.hashing import block_hashes, sequence_hashes
from dynamo.protocols.kv_events import KvStored
from dynamo.runtime.errors import KvTransferError

PROMPT = list(range(10, 30))  # 20 tokens: 5 full blocks of 4


def test_params_name_the_prompts_full_blocks_and_pass_their_own_check() -> None:
    params = transfer_params(PROMPT[:18], 4, now_s=100.0, keep_s=5.0)
    inner = params["kv_transfer_params"]
    assert isinstance(inner, dict)
    assert inner["block_hashes"] == prompt_hashes(PROMPT[:16], 4)
    assert len(inner["block_hashes"]) == 4
    assert inner["expires_at_unix_s"] == 105.0
    assert check_params(params, PROMPT[:18], 4, now_s=104.0) == inner["block_hashes"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (None, "disaggregated_params has no kv_transfer_params object"),
        ({}, "disaggregated_params has no kv_transfer_params object"),
        ({"kv_transfer_params": {"do_remote_decode": True}}, "for engine None, not 'mocker'"),
    ],
)
def test_missing_or_foreign_params_are_refused(params: object, message: str) -> None:
    with pytest.raises(KvTransferError) as err:
        check_params(params, PROMPT, 4, now_s=0.0)
    assert message in str(err.value)
    assert err.value.param == "disaggregated_params"


def test_params_of_another_prompt_block_size_or_past_their_time_are_refused() -> None:
    params = transfer_params(PROMPT, 4, now_s=100.0, keep_s=5.0)
    with pytest.raises(KvTransferError, match="name blocks of another prompt"):
        check_params(params, [*PROMPT[:-1], 999], 4, now_s=100.0)
    with pytest.raises(KvTransferError, match="block size 4; this worker's is 8"):
        check_params(params, PROMPT, 8, now_s=100.0)
    with pytest.raises(KvTransferError, match="stale: the prefill worker no longer holds"):
        check_params(params, PROMPT, 4, now_s=105.5)


def test_kv_bytes_per_token_come_from_the_model_config(tmp_path: Path) -> None:
    assert kv_bytes_per_token(tiny_model_path()) == 2 * 2 * 4 * 64 * 2
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "num_hidden_layers": 28,
                "num_attention_heads": 16,
                "num_key_value_heads": 8,
                "head_dim": 128,
                "hidden_size": 1024,
                "torch_dtype": "float32",
            }
        )
    )
    assert kv_bytes_per_token(tmp_path) == 2 * 28 * 8 * 128 * 4
    assert kv_bytes_per_token(tmp_path / "missing") == DEFAULT_KV_BYTES_PER_TOKEN
    assert kv_bytes_per_token(None) == DEFAULT_KV_BYTES_PER_TOKEN


def test_transfers_queue_on_one_link_at_its_bandwidth() -> None:
    link = KvLink(bandwidth_gb_s=1.0)
    assert link.schedule(500_000_000, now_s=10.0) == 10.5
    assert link.schedule(1_000_000_000, now_s=10.1) == 11.5  # waits for the first
    assert link.schedule(0, now_s=20.0) == 20.0
    assert KvLink(bandwidth_gb_s=0.0).schedule(10**12, now_s=3.0) == 3.0  # unlimited
    assert KvLink(bandwidth_gb_s=2.0, speedup_ratio=2.0).schedule(4 * 10**9, now_s=0.0) == 1.0


def test_a_transferred_prompt_is_stored_and_decoded_without_a_prefill_step() -> None:
    d = Driver(config())
    d.add(0, PROMPT, max_tokens=3, remote_tokens=len(PROMPT) - 1)
    first = d.step()
    assert first.batch == [(0, 1)]
    assert first.prefill_tokens == 0
    timing = TimingModel()
    assert first.duration_s == timing.decode_s(first.kv_usage)
    stored = [e.data for e in d.events if isinstance(e.data, KvStored)]
    assert [b.block_hash for s in stored for b in s.blocks] == prompt_hashes(PROMPT, 4)
    while d.scheduler.has_work():
        d.step()
    assert d.finished[0].completion_tokens == 3
    assert d.scheduler.kv.active_blocks == 0


def test_hashes_handed_to_the_scheduler_give_the_same_events_as_its_own() -> None:
    runs = []
    for given in (False, True):
        d = Driver(config())
        local = block_hashes(PROMPT, 4)
        hashes = (local, sequence_hashes(local)) if given else None
        d.scheduler.add_request(
            0, PROMPT, seed=1, max_tokens=6, remote_tokens=len(PROMPT) - 1, prompt_hashes=hashes
        )
        while d.scheduler.has_work():
            d.step()
        runs.append([e.data for e in d.events])
    assert runs[0] == runs[1] and runs[0]


def test_hashes_that_do_not_cover_the_prompt_are_refused() -> None:
    d = Driver(config())
    local = block_hashes(PROMPT[:16], 4)  # 4 of the prompt's 5 full blocks
    with pytest.raises(ValueError, match="full blocks"):
        d.scheduler.add_request(0, PROMPT, seed=1, prompt_hashes=(local, sequence_hashes(local)))


def test_a_prompt_without_transfer_pays_its_prefill() -> None:
    d = Driver(config())
    d.add(0, PROMPT, max_tokens=1)
    first = d.step()
    assert first.prefill_tokens == len(PROMPT)
    assert first.duration_s == TimingModel().prefill_s(len(PROMPT))
