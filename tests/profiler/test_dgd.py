"""Generated graphs: the ConfigMap size limit and TP set on a base DGD's workers."""

from __future__ import annotations

import pytest

from dynamo.profiler.dgd import _set_tp, profile_configmap
from dynamo.runtime.errors import ConfigError


def test_the_configmap_carries_the_json_forms_and_refuses_over_1_mib() -> None:
    cm = profile_configmap({"prefill_raw_data.json": {"prefill_isl": [1.0]}}, "ns")
    assert cm["metadata"] == {"name": "planner-profile-data", "namespace": "ns"}
    assert cm["data"] == {"prefill_raw_data.json": '{"prefill_isl":[1.0]}'}
    with pytest.raises(ConfigError, match=r"over the 1 MiB ConfigMap limit: lower"):
        profile_configmap({"decode_raw_data.json": {"z_itl": [1.0] * 300_000}}, None)


def test_tp_replaces_the_flag_or_is_appended() -> None:
    listed = {"extraPodSpec": {"mainContainer": {"args": ["--model", "m", "--tp", "1"]}}}
    _set_tp(listed, "sglang", 4)
    assert listed["extraPodSpec"]["mainContainer"]["args"] == ["--model", "m", "--tp", "4"]
    assert listed["resources"] == {"limits": {"gpu": "4"}}

    shell = {"extraPodSpec": {"mainContainer": {"args": ["python3 -m dynamo.vllm --model m"]}}}
    _set_tp(shell, "vllm", 2)
    assert shell["extraPodSpec"]["mainContainer"]["args"] == [
        "python3 -m dynamo.vllm --model m --tensor-parallel-size 2"
    ]
