"""MockerConfig: Dynamo's mocker flags and env vars, derived from one dataclass."""

from __future__ import annotations

import argparse

import pytest

from dynamo.engines.mocker.config import MockerConfig
from dynamo.runtime.config import add_arguments, parse, resolve
from dynamo.runtime.errors import ConfigError


def test_defaults_match_dynamo() -> None:
    cfg = MockerConfig()
    assert (cfg.num_gpu_blocks, cfg.block_size, cfg.max_num_seqs) == (16384, 64, 256)
    assert (cfg.max_num_batched_tokens, cfg.watermark, cfg.preemption_mode) == (8192, 0.01, "lifo")
    assert cfg.enable_prefix_caching and cfg.enable_chunked_prefill
    assert (cfg.speedup_ratio, cfg.decode_speedup_ratio, cfg.data_parallel_size) == (1.0, 1.0, 1)
    assert cfg.startup_time_s is None and cfg.max_model_len is None
    assert cfg.effective_max_model_len == 16384 * 64


def test_every_dynamo_mocker_flag_parses() -> None:
    cfg = parse(
        MockerConfig,
        [
            "--model-path", "/m", "--model-name", "tiny", "--endpoint", "dyn://ns.mock.generate",
            "--num-workers", "2", "--is-decode-worker", "--num-gpu-blocks-override", "100",
            "--block-size", "16", "--max-num-seqs", "4", "--max-num-batched-tokens", "512",
            "--no-enable-prefix-caching", "--no-enable-chunked-prefill", "--watermark", "0.05",
            "--preemption-mode", "fifo", "--speedup-ratio", "10", "--decode-speedup-ratio", "2",
            "--data-parallel-size", "2", "--startup-time", "1.5", "--max-model-len", "256",
        ],
    )  # fmt: skip
    assert cfg == MockerConfig(
        model_path="/m", model_name="tiny", endpoint="dyn://ns.mock.generate", num_workers=2,
        is_decode_worker=True, num_gpu_blocks=100, block_size=16, max_num_seqs=4,
        max_num_batched_tokens=512, enable_prefix_caching=False, enable_chunked_prefill=False,
        watermark=0.05, preemption_mode="fifo", speedup_ratio=10.0, decode_speedup_ratio=2.0,
        data_parallel_size=2, startup_time_s=1.5, max_model_len=256,
    )  # fmt: skip
    assert cfg.effective_max_model_len == 256


def test_env_vars_follow_the_flag_names_and_flags_win() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, MockerConfig)
    env = {"DYN_NUM_GPU_BLOCKS_OVERRIDE": "77", "DYN_STARTUP_TIME": "2", "DYN_BLOCK_SIZE": "8"}
    cfg = resolve(MockerConfig, parser.parse_args(["--block-size", "32"]), env)
    assert (cfg.num_gpu_blocks, cfg.startup_time_s, cfg.block_size) == (77, 2.0, 32)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"block_size": 1}, "--block-size"),
        ({"num_gpu_blocks": 0}, "--num-gpu-blocks-override"),
        ({"watermark": 1.0}, "--watermark"),
        ({"speedup_ratio": -1.0}, "--speedup-ratio"),
        ({"preemption_mode": "random"}, "--preemption-mode"),
        ({"is_prefill_worker": True, "is_decode_worker": True}, "exclusive"),
        ({"max_model_len": 0}, "--max-model-len"),
        (
            {"is_decode_worker": True, "disaggregation_mode": "prefill"},
            "--disaggregation-mode prefill contradicts --is-decode-worker",
        ),
        ({"kv_transfer_bandwidth_gb_s": -1.0}, "--kv-transfer-bandwidth must be >= 0"),
        ({"kv_bytes_per_token": 0}, "--kv-bytes-per-token must be >= 1"),
        ({"kv_transfer_keep_s": 0.0}, "--kv-transfer-keep must be > 0"),
    ],
)
def test_bad_values_are_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MockerConfig(**kwargs)  # type: ignore[arg-type]


def test_choices_are_checked_when_resolving() -> None:
    with pytest.raises(ConfigError, match="preemption"):
        resolve(MockerConfig, {}, {"DYN_PREEMPTION_MODE": "newest"})


def test_max_model_len_is_capped_by_the_cache_and_by_the_step_without_chunking() -> None:
    cfg = MockerConfig(num_gpu_blocks=10, block_size=4, max_model_len=1000)
    assert cfg.effective_max_model_len == 40
    cfg = MockerConfig(enable_chunked_prefill=False, max_num_batched_tokens=300)
    assert cfg.effective_max_model_len == 300


def test_default_endpoint_depends_on_the_role() -> None:
    assert MockerConfig().endpoint_for("ns") == "dyn://ns.backend.generate"
    assert MockerConfig(is_prefill_worker=True).endpoint_for("ns") == "dyn://ns.prefill.generate"
    assert MockerConfig(endpoint="dyn://a.b.c").endpoint_for("ns") == "dyn://a.b.c"
    prefill = MockerConfig(disaggregation_mode="prefill")
    assert prefill.endpoint_for("ns") == "dyn://ns.prefill.generate"
    assert prefill.mode == "prefill"
    assert (
        MockerConfig(disaggregation_mode="decode").endpoint_for("ns") == "dyn://ns.backend.generate"
    )
    assert MockerConfig(is_decode_worker=True, disaggregation_mode="decode").mode == "decode"
    assert MockerConfig().mode == "agg"
