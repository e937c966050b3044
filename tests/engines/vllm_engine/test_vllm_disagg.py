"""vLLM's disaggregated legs as plain data: the connector a worker loads, the params each leg
hands vLLM, and what a prefill worker returns (no vLLM needed)."""

from __future__ import annotations

from typing import Any

import pytest

from dynamo.engines.vllm.disagg import (
    check_connector,
    connector_config,
    leg_kv_transfer_params,
    leg_sampling_kwargs,
    prefill_result,
)
from dynamo.protocols.engine import EngineRequest
from dynamo.protocols.model_card import WorkerRole
from dynamo.runtime.errors import ConfigError, KvTransferError

PREFILL, DECODE, AGG = WorkerRole.PREFILL, WorkerRole.DECODE, WorkerRole.AGGREGATED
NIXL_PARAMS = {
    "do_remote_prefill": True,
    "remote_engine_id": "e1",
    "remote_block_ids": [3, 4],
    "remote_host": "10.0.0.1",
    "remote_port": 5600,
}


def req(**fields: Any) -> EngineRequest:
    r: dict[str, Any] = {
        "request_id": "r",
        "model": "m",
        "token_ids": [1, 2, 3],
        "stop_conditions": {"max_tokens": 9},
        "sampling_options": {},
    }
    r.update(fields)
    return r  # type: ignore[return-value]


def test_disaggregated_workers_default_to_nixl_and_aggregated_ones_to_no_connector() -> None:
    nixl = {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
    assert connector_config(None, PREFILL, has_kv_transfer_config=False) == nixl
    assert connector_config(None, DECODE, has_kv_transfer_config=False) == nixl
    assert connector_config(None, AGG, has_kv_transfer_config=False) is None


def test_connector_names_map_to_vllms_connectors() -> None:
    assert connector_config("lmcache", DECODE, has_kv_transfer_config=False) == {
        "kv_connector": "LMCacheConnectorV1",
        "kv_role": "kv_both",
    }
    assert connector_config("nixl", AGG, has_kv_transfer_config=False) == {
        "kv_connector": "NixlConnector",
        "kv_role": "kv_both",
    }
    assert connector_config("none", PREFILL, has_kv_transfer_config=False) is None
    with pytest.raises(ConfigError, match="--connector 'kvbm': choose one of nixl, lmcache, none"):
        connector_config("kvbm", PREFILL, has_kv_transfer_config=False)


def test_vllms_own_kv_transfer_config_replaces_the_connector_flag() -> None:
    assert connector_config(None, PREFILL, has_kv_transfer_config=True) is None
    with pytest.raises(ConfigError, match="--connector and --kv-transfer-config exclude"):
        connector_config("nixl", PREFILL, has_kv_transfer_config=True)


def test_a_disaggregated_worker_without_a_connector_is_refused() -> None:
    with pytest.raises(ConfigError, match="a prefill worker needs a KV connector"):
        check_connector(None, PREFILL, installed=lambda _: True)
    with pytest.raises(ConfigError, match="a decode worker needs a KV connector"):
        check_connector(None, DECODE, installed=lambda _: True)
    check_connector(None, AGG, installed=lambda _: False)


def test_a_connector_whose_library_is_missing_is_refused_with_the_cpu_alternative() -> None:
    asked: list[str] = []

    def installed(module: str) -> bool:
        asked.append(module)
        return False

    with pytest.raises(ConfigError) as err:
        check_connector("NixlConnector", PREFILL, installed=installed)
    assert asked == ["nixl"]
    assert "NixlConnector needs the 'nixl' package, which is not installed" in str(err.value)
    assert '"kv_connector":"ExampleConnector"' in str(err.value)
    with pytest.raises(ConfigError, match="needs the 'lmcache' package"):
        check_connector("LMCacheConnectorV1", DECODE, installed=installed)
    check_connector("ExampleConnector", DECODE, installed=installed)  # ships inside vLLM
    check_connector("NixlConnector", DECODE, installed=lambda _: True)


def test_the_prefill_leg_asks_vllm_to_keep_the_kv_for_a_remote_decode() -> None:
    params = leg_kv_transfer_params(req(), PREFILL, has_connector=True)
    assert params == {"do_remote_decode": True}
    kwargs = leg_sampling_kwargs({"max_tokens": 9, "min_tokens": 4}, PREFILL, params)
    assert kwargs == {
        "max_tokens": 1,
        "min_tokens": 1,
        "extra_args": {"kv_transfer_params": {"do_remote_decode": True}},
    }


def test_the_decode_leg_hands_the_prefill_workers_params_back_to_vllm() -> None:
    request = req(disaggregated_params=prefill_result(NIXL_PARAMS))
    params = leg_kv_transfer_params(request, DECODE, has_connector=True)
    assert params == NIXL_PARAMS
    kwargs = leg_sampling_kwargs({"max_tokens": 9, "min_tokens": 0}, DECODE, params)
    assert kwargs == {
        "max_tokens": 9,
        "min_tokens": 0,
        "extra_args": {"kv_transfer_params": NIXL_PARAMS},
    }


def test_params_of_a_connector_that_keys_kv_by_prompt_are_empty() -> None:
    request = req(disaggregated_params=prefill_result(None))
    assert request["disaggregated_params"] == {"kv_transfer_params": None}
    assert leg_kv_transfer_params(request, DECODE, has_connector=True) is None
    assert leg_sampling_kwargs({"max_tokens": 9}, DECODE, None) == {"max_tokens": 9}


def test_an_aggregated_request_carries_no_params() -> None:
    assert leg_kv_transfer_params(req(), DECODE, has_connector=True) is None
    assert leg_kv_transfer_params(req(), AGG, has_connector=False) is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"blocks": [1]}, "disaggregated_params must be {'kv_transfer_params': ...}"),
        ("stale", "disaggregated_params must be {'kv_transfer_params': ...}"),
        ({"kv_transfer_params": [1, 2]}, "kv_transfer_params must be an object, got \\[1, 2\\]"),
    ],
)
def test_malformed_params_are_a_kv_transfer_error(params: object, message: str) -> None:
    with pytest.raises(KvTransferError, match=message):
        leg_kv_transfer_params(req(disaggregated_params=params), DECODE, has_connector=True)


def test_a_worker_without_a_connector_refuses_params_it_cannot_load() -> None:
    request = req(disaggregated_params=prefill_result(NIXL_PARAMS))
    with pytest.raises(KvTransferError, match="has no KV connector"):
        leg_kv_transfer_params(request, AGG, has_connector=False)
