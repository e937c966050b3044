import dataclasses

import pytest

from dynamo.router.config import RouterConfig, log_level, routing_process_parser
from dynamo.runtime.config import RuntimeConfig, option, parse, resolve
from dynamo.runtime.errors import ConfigError


def test_defaults_match_dynamo():
    c = RouterConfig()
    assert c.router_mode == "round-robin"
    assert c.kv_overlap_score_weight == 16.0  # Dynamo's is 1 (docs/router.md#defaults)
    assert c.kv_overlap_score_credit == 4.0  # Dynamo's is 1
    assert c.kv_overlap_score_credit_decay == 0.0
    assert c.kv_overlap_score_credit_queue_scale == 1.0  # ours; no effect at Dynamo's credit 1
    assert c.router_temperature == 0.0
    assert c.kv_events is True
    assert c.kv_cache_block_size is None
    assert c.router_ttl_s == 120.0
    assert c.router_max_tree_size == 2**20
    assert c.router_prune_target_ratio == 0.8
    assert c.active_decode_blocks_threshold is None
    assert c.active_prefill_tokens_threshold is None
    assert c.router_replica_sync is False
    assert c.track_active_blocks is True
    assert c.assume_kv_reuse is True


def test_flags():
    c = parse(
        RouterConfig,
        [
            "--router-mode",
            "kv",
            "--no-kv-events",
            "--router-ttl",
            "5",
            "--kv-cache-block-size",
            "64",
            "--router-temperature",
            "0.5",
            "--active-decode-blocks-threshold",
            "0.9",
            "--no-track-active-blocks",
            "--no-assume-kv-reuse",
            "--router-replica-sync",
        ],
    )
    assert (c.router_mode, c.kv_events, c.router_ttl_s, c.kv_cache_block_size) == (
        "kv",
        False,
        5.0,
        64,
    )
    assert c.router_temperature == 0.5
    assert c.active_decode_blocks_threshold == 0.9
    assert (c.track_active_blocks, c.assume_kv_reuse, c.router_replica_sync) == (
        False,
        False,
        True,
    )


def test_overlap_credit_flags_and_the_prefill_load_scale_aliases():
    c = parse(
        RouterConfig,
        ["--router-kv-overlap-score-credit", "2", "--router-kv-overlap-score-credit-decay", "1"],
    )
    assert (c.kv_overlap_score_credit, c.kv_overlap_score_credit_decay) == (2.0, 1.0)
    flag = "--router-kv-overlap-score-credit-queue-scale"
    assert parse(RouterConfig, [flag, "0"]).kv_overlap_score_credit_queue_scale == 0.0
    env = {"DYN_ROUTER_KV_OVERLAP_SCORE_CREDIT_QUEUE_SCALE": "2"}
    assert resolve(RouterConfig, {}, env).kv_overlap_score_credit_queue_scale == 2.0
    for flag in (
        "--kv-overlap-score-weight",
        "--router-kv-overlap-score-weight",
        "--router-prefill-load-scale",
    ):
        assert parse(RouterConfig, [flag, "16"]).kv_overlap_score_weight == 16.0
    env = {"DYN_ROUTER_KV_OVERLAP_SCORE_CREDIT": "1.5"}
    assert resolve(RouterConfig, {}, env).kv_overlap_score_credit == 1.5


def test_env_and_flag_precedence():
    env = {"DYN_ROUTER_MODE": "random", "DYN_KV_EVENTS": "false", "DYN_ROUTER_TTL": "7"}
    c = resolve(RouterConfig, {"router_mode": "kv"}, env)
    assert (c.router_mode, c.kv_events, c.router_ttl_s) == ("kv", False, 7.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kv_overlap_score_weight": -1.0}, "--kv-overlap-score-weight must be >= 0, got -1.0"),
        ({"router_temperature": -0.1}, "--router-temperature must be >= 0, got -0.1"),
        (
            {"kv_overlap_score_credit": -1.0},
            "--router-kv-overlap-score-credit must be >= 0, got -1.0",
        ),
        (
            {"kv_overlap_score_credit_queue_scale": -0.5},
            "--router-kv-overlap-score-credit-queue-scale must be >= 0, got -0.5",
        ),
        (
            {"kv_overlap_score_credit_decay": float("inf")},
            "--router-kv-overlap-score-credit-decay must be >= 0, got inf",
        ),
        ({"kv_cache_block_size": 1}, "--kv-cache-block-size must be > 1, got 1"),
        ({"router_ttl_s": 0.0}, "--router-ttl must be > 0, got 0.0"),
        ({"router_prune_target_ratio": 1.5}, "--router-prune-target-ratio must be in (0, 1]"),
        ({"active_decode_blocks_threshold": 2.0}, "--active-decode-blocks-threshold must be in"),
        ({"active_prefill_tokens_threshold": -1}, "--active-prefill-tokens-threshold must be"),
    ],
)
def test_invalid_values(kwargs, message):
    with pytest.raises(ConfigError) as exc:
        RouterConfig(**kwargs)
    assert str(exc.value).startswith(message)


def test_bad_mode():
    with pytest.raises(ConfigError, match="--router-mode / DYN_ROUTER_MODE: 'fast' is not one of"):
        resolve(RouterConfig, {"router_mode": "fast"}, {})


def test_routing_process_parser_and_log_level():
    @dataclasses.dataclass(frozen=True)
    class Own:
        port: int = option(7, help="a port")

    parser = routing_process_parser("prog", "what it does", Own, "own")
    args = parser.parse_args(["--port", "9", "--router-mode", "kv", "--namespace", "n"])
    assert resolve(Own, args).port == 9
    assert resolve(RouterConfig, args).router_mode == "kv"
    assert resolve(RuntimeConfig, args).namespace == "n"
    assert log_level(args, {}) == "info"
    assert log_level(args, {"DYN_LOG": "debug"}) == "debug"
    assert log_level(parser.parse_args(["--log-level", "warning"]), {"DYN_LOG": "debug"}) == (
        "warning"
    )
