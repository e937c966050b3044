"""Router configuration: Dynamo's router flags and `DYN_*` env vars from one frozen dataclass.

The frontend and the standalone router build their parsers with `routing_process_parser`
(their own flags, these, the runtime's and `--log-level`) and this config with `resolve`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Mapping

from dynamo.runtime.config import RuntimeConfig, add_arguments, option
from dynamo.runtime.errors import ConfigError
from dynamo.runtime.logging_config import parse_log_filter

ROUTER_MODES = ("round-robin", "random", "kv", "direct")

# Where our defaults differ from Dynamo 1.6.1's (1 and 1); docs/router.md, "Defaults": one block
# of prefill costs an engine far more than one more active KV block, and a cached prefix is worth
# more than the prefill it saves one request (a second copy spends cache, splits a conversation).
DEFAULT_OVERLAP_SCORE_WEIGHT = 16.0
DEFAULT_OVERLAP_SCORE_CREDIT = 4.0
# Ours, no Dynamo counterpart (off at credit 1): when every worker is queued, the credit's part
# above 1 grows with the shortest queue, so the affinity test becomes a ratio of queues.
DEFAULT_OVERLAP_SCORE_CREDIT_QUEUE_SCALE = 1.0


@dataclasses.dataclass(frozen=True)
class RouterConfig:
    """How requests are spread over the workers of one model."""

    router_mode: str = option(
        "round-robin", help="how to pick a worker for each request", choices=ROUTER_MODES
    )
    kv_overlap_score_weight: float = option(
        DEFAULT_OVERLAP_SCORE_WEIGHT,
        aliases=("--router-kv-overlap-score-weight", "--router-prefill-load-scale"),
        help="weight of prefill blocks against active decode blocks in the KV cost "
        "(Dynamo 1.6.1's prefill load scale; Dynamo's default is 1)",
    )
    kv_overlap_score_credit: float = option(
        DEFAULT_OVERLAP_SCORE_CREDIT,
        flag="--router-kv-overlap-score-credit",
        env="DYN_ROUTER_KV_OVERLAP_SCORE_CREDIT",
        help="prefill blocks a cached block saves in the KV cost; above 1 favours cache "
        "affinity (the prefill cost is clamped at 0; Dynamo's default is 1)",
    )
    kv_overlap_score_credit_decay: float = option(
        0.0,
        flag="--router-kv-overlap-score-credit-decay",
        env="DYN_ROUTER_KV_OVERLAP_SCORE_CREDIT_DECAY",
        help="shrink the overlap credit of workers with more pending prefill than the least "
        "loaded one: 1 halves it at one request's worth of excess (0 = off)",
    )
    kv_overlap_score_credit_queue_scale: float = option(
        DEFAULT_OVERLAP_SCORE_CREDIT_QUEUE_SCALE,
        flag="--router-kv-overlap-score-credit-queue-scale",
        env="DYN_ROUTER_KV_OVERLAP_SCORE_CREDIT_QUEUE_SCALE",
        help="grow the overlap credit's part above 1 by this times the pending prefill of the "
        "least loaded worker, in requests of this size: at 1 a worker holding the prompt keeps "
        "it while its queue is below credit times the shortest (0 = static credit; no effect "
        "at credit 1, Dynamo's)",
    )
    router_temperature: float = option(
        0.0, help="softmax sampling temperature over KV costs (0 = always the cheapest)"
    )
    kv_events: bool = option(
        True, help="index KV events from workers (off = approximate mode from own decisions)"
    )
    kv_cache_block_size: int | None = option(
        None, help="KV block size in tokens (default: from each worker's model card)"
    )
    router_ttl_s: float = option(
        120.0,
        flag="--router-ttl",
        env="DYN_ROUTER_TTL",
        help="approximate mode: seconds a routed block is assumed cached",
    )
    router_max_tree_size: int = option(
        2**20, help="approximate mode: index size (worker blocks) that triggers pruning"
    )
    router_prune_target_ratio: float = option(
        0.8, help="approximate mode: prune down to this fraction of the max tree size"
    )
    active_decode_blocks_threshold: float | None = option(
        None, help="busy when a worker's active KV blocks exceed this fraction (0-1) of its total"
    )
    active_prefill_tokens_threshold: int | None = option(
        None, help="busy when a worker's pending prefill tokens exceed this count"
    )
    router_replica_sync: bool = option(
        False, help="share active-sequence state with other router replicas"
    )
    track_active_blocks: bool = option(
        True, help="track each worker's active sequences for the decode-load term"
    )
    assume_kv_reuse: bool = option(
        True, help="count shared prefix blocks of active requests once (off = no dedup)"
    )

    def __post_init__(self) -> None:
        _check(
            math.isfinite(self.kv_overlap_score_weight) and self.kv_overlap_score_weight >= 0,
            f"--kv-overlap-score-weight must be >= 0, got {self.kv_overlap_score_weight}",
        )
        for name, value in (
            ("--router-kv-overlap-score-credit", self.kv_overlap_score_credit),
            ("--router-kv-overlap-score-credit-decay", self.kv_overlap_score_credit_decay),
            (
                "--router-kv-overlap-score-credit-queue-scale",
                self.kv_overlap_score_credit_queue_scale,
            ),
        ):
            _check(math.isfinite(value) and value >= 0, f"{name} must be >= 0, got {value}")
        _check(
            math.isfinite(self.router_temperature) and self.router_temperature >= 0,
            f"--router-temperature must be >= 0, got {self.router_temperature}",
        )
        _check(
            self.kv_cache_block_size is None or self.kv_cache_block_size > 1,
            f"--kv-cache-block-size must be > 1, got {self.kv_cache_block_size}",
        )
        _check(self.router_ttl_s > 0, f"--router-ttl must be > 0, got {self.router_ttl_s}")
        _check(
            self.router_max_tree_size > 0,
            f"--router-max-tree-size must be > 0, got {self.router_max_tree_size}",
        )
        _check(
            0 < self.router_prune_target_ratio <= 1,
            f"--router-prune-target-ratio must be in (0, 1], got {self.router_prune_target_ratio}",
        )
        _check(
            self.active_decode_blocks_threshold is None
            or 0 <= self.active_decode_blocks_threshold <= 1,
            "--active-decode-blocks-threshold must be in [0, 1], "
            f"got {self.active_decode_blocks_threshold}",
        )
        _check(
            self.active_prefill_tokens_threshold is None
            or self.active_prefill_tokens_threshold >= 0,
            "--active-prefill-tokens-threshold must be >= 0, "
            f"got {self.active_prefill_tokens_threshold}",
        )


def routing_process_parser(
    prog: str, description: str, own_config: type, own_title: str
) -> argparse.ArgumentParser:
    """The flags of a process that routes: `own_config`'s, the router's, the runtime's and
    `--log-level` (see `log_level`)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser, own_config, title=own_title)
    add_arguments(parser, RouterConfig, title="router")
    add_arguments(parser, RuntimeConfig, title="runtime (discovery and transports)")
    parser.add_argument(
        "--log-level",
        default=None,
        help="a level (debug, info, warn...) and target=level overrides, comma-separated "
        "[env DYN_LOG; default info]",
    )
    return parser


def log_level(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> str:
    """The log filter (`dynamo.runtime.logging_config` syntax): `--log-level`, else `DYN_LOG`,
    else info. A bad one is a ConfigError here, before the process starts."""
    env = os.environ if env is None else env
    spec = str(args.log_level or env.get("DYN_LOG") or "info")
    parse_log_filter(spec)
    return spec


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)
