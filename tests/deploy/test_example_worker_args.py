"""The worker command lines of the SGLang and TensorRT-LLM examples parse with our entry points'
parsers (vLLM's needs vLLM installed: its examples are checked in the vLLM tier)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from dynamo.engines.sglang import parse_sglang_args
from dynamo.engines.trtllm_args import parse_trtllm_args
from dynamo.engines.trtllm_disagg import require_cache_transceiver
from dynamo.protocols.model_card import WorkerRole
from dynamo.testing.fake_sglang import FakeServerArgs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXPECTED_ROLE = {
    None: WorkerRole.AGGREGATED,
    "decode": WorkerRole.DECODE,
    "prefill": WorkerRole.PREFILL,
}


def _workers(backend: str) -> list[tuple[str, str | None, list[str]]]:
    out = []
    for path in sorted(
        [*(EXAMPLES / backend).glob("*.yaml"), *(EXAMPLES / backend).glob("multinode/*.yaml")]
    ):
        doc: dict[str, Any] = yaml.safe_load(path.read_text())
        for name, svc in doc["spec"]["services"].items():
            main = svc.get("extraPodSpec", {}).get("mainContainer", {})
            line = " ".join([*main.get("command", []), *main.get("args", [])])
            line = line.replace("$DYNAMO_HOME", str(EXAMPLES / backend))  # the image's value
            marker = f"dynamo.{backend}"
            if marker in line:
                argv = shlex.split(line.split(marker, 1)[1])
                out.append((f"{path.name}:{name}", svc.get("subComponentType"), argv))
    return out


@pytest.mark.parametrize(("where", "sub", "argv"), _workers("trtllm"))
def test_trtllm_example_args_parse(where: str, sub: str | None, argv: list[str]) -> None:
    config, kwargs = parse_trtllm_args(argv, resolve_model_path=False)
    assert config.role is EXPECTED_ROLE[sub], where
    assert kwargs["model"]
    require_cache_transceiver(kwargs, config.role)  # prefill/decode workers would start


@pytest.mark.parametrize(("where", "sub", "argv"), _workers("sglang"))
def test_sglang_example_args_parse(where: str, sub: str | None, argv: list[str]) -> None:
    _, server_args, role = parse_sglang_args(
        argv, server_args_cls=FakeServerArgs, resolve_model_path=False
    )
    assert role is EXPECTED_ROLE[sub], where
    assert server_args.model_path
    if role is WorkerRole.PREFILL:  # decode workers reach its bootstrap server from their pods
        assert server_args.host == "0.0.0.0", where
        assert server_args.disaggregation_bootstrap_port == 12345, where
