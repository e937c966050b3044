"""Reading a DGDR, its spec or a bare profiler config; bad input named by its key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dynamo.profiler.config import Hardware, Sla, load_request, parse_request, snake
from dynamo.runtime.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SPEC = {
    "model": "Qwen/Qwen3-0.6B",
    "backend": "vllm",
    "useMocker": True,
    "profilingConfig": {
        "config": {
            "sla": {"isl": 3000, "osl": 150, "ttft": 300, "itl": 25},
            "hardware": {"minNumGpusPerEngine": 1, "maxNumGpusPerEngine": 2},
            "planner": {"plannerLoadPredictor": "constant"},
        }
    },
}


def test_snake_case_conversion() -> None:
    assert snake("minNumGpusPerEngine") == "min_num_gpus_per_engine"
    assert snake("max_num_gpus_per_engine") == "max_num_gpus_per_engine"


def test_the_example_dgdr_manifest() -> None:
    request = load_request(REPO / "examples" / "mocker" / "dgdr.yaml")
    assert (request.model, request.backend, request.use_mocker) == (
        "Qwen/Qwen3-0.6B",
        "vllm",
        True,
    )
    assert request.sla == Sla(isl=3000, osl=150, ttft_ms=300.0, itl_ms=25.0)
    assert request.hardware == Hardware(1, 4, 8, "h100_sxm")
    assert request.name == "qwen3-mocker"
    assert request.mode == "rapid"


def test_spec_alone_and_a_whole_manifest_agree() -> None:
    manifest = {"kind": "DynamoGraphDeploymentRequest", "metadata": {"name": "r"}, "spec": SPEC}
    whole, spec_only = parse_request(manifest), parse_request(SPEC)
    assert whole.sla == spec_only.sla == Sla(3000, 150, 300.0, 25.0)
    assert whole.name == "r" and spec_only.name == "qwen3-0-6b"
    assert whole.planner_args == (("load-predictor", "constant"),)


def test_a_bare_snake_case_config(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        '{"sla": {"isl": 100, "osl": 10, "ttft": 50, "itl": 5},'
        ' "hardware": {"min_num_gpus_per_engine": 2, "max_num_gpus_per_engine": 8,'
        ' "gpu_type": "H200_SXM"},'
        ' "deployment": {"model": "m"}, "engine": {"backend": "sglang"}}'
    )
    request = load_request(path, mode="thorough")
    assert (request.model, request.backend, request.mode) == ("m", "sglang", "thorough")
    assert request.hardware == Hardware(2, 8, 8, "h200_sxm")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"sla": {"ttft": 0}}, "sla.ttft: must be > 0, got 0"),
        ({"sla": {"itl": "fast"}}, "sla.itl: expected a number, got 'fast'"),
        ({"sla": {"tpot": 3}}, "sla.tpot: unknown key (known: isl, itl, osl, ttft)"),
        ({"slas": {}}, "profilingConfig.config: unknown section(s) slas"),
        (
            {"hardware": {"minNumGpusPerEngine": 4, "maxNumGpusPerEngine": 2}},
            "hardware: min_num_gpus_per_engine 4 > max_num_gpus_per_engine 2",
        ),
        ({"engine": {"isMoeModel": True}}, "engine.is_moe_model: MoE sweeps"),
        ({"sweep": {"pickWithWebui": True}}, "sweep.pick_with_webui: not supported"),
        ({"planner": {"loadPredictor": "x"}}, "planner.loadPredictor: planner keys are"),
    ],
)
def test_bad_settings_are_named(config: dict, message: str) -> None:
    spec = {**SPEC, "profilingConfig": {"config": config}}
    with pytest.raises(ConfigError) as info:
        parse_request(spec)
    assert message in str(info.value)


def test_a_spec_without_a_model_fails_validation() -> None:
    with pytest.raises(ConfigError, match=r"spec: .*model"):
        parse_request({"backend": "vllm", "profilingConfig": {"config": {}}})


def test_unknown_mode_and_gpu(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mode: 'slow' is not one of rapid, thorough"):
        parse_request(SPEC, mode="slow")
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "backend": "tensorflow"}))
    with pytest.raises(ConfigError, match="backend"):
        load_request(path)


def test_the_search_strategy_picks_the_mode_and_the_flag_wins() -> None:
    spec = {**SPEC, "profilingConfig": {"config": {"sweep": {"searchStrategy": "thorough"}}}}
    assert parse_request(spec).mode == "thorough"
    assert parse_request(spec, mode="rapid").mode == "rapid"
    bad = {**SPEC, "profilingConfig": {"config": {"sweep": {"search_strategy": "online"}}}}
    with pytest.raises(ConfigError, match=r"sweep\.search_strategy: 'online' is not one of"):
        parse_request(bad)
