"""The routing policies behind `--router-mode`, and `make_policy` that builds one from config.

`round-robin` and `random` ignore KV state; `direct` requires nvext `backend_instance_id`;
`kv` is `KvPolicy` (prefix overlap plus load). Every policy honours a request's
`backend_instance_id`, its `exclude` set and the busy thresholds.
"""

from __future__ import annotations

import random

from dynamo.router.base import RouteRequest, RoutingDecision, RoutingPolicy
from dynamo.router.config import RouterConfig
from dynamo.router.kv_policy import KvPolicy, KvRouterStats
from dynamo.router.policy_base import PolicyBase
from dynamo.runtime.errors import ConfigError, InvalidRequestError

__all__ = [
    "DirectPolicy",
    "KvPolicy",
    "KvRouterStats",
    "PolicyBase",
    "RandomPolicy",
    "RoundRobinPolicy",
    "make_policy",
]


class RoundRobinPolicy(PolicyBase):
    """Each request goes to the next eligible worker key in instance-id order."""

    def __init__(self, config: RouterConfig | None = None, rng: random.Random | None = None):
        super().__init__(config, rng)
        self._next = 0

    def select(self, request: RouteRequest) -> RoutingDecision:
        keys = self.candidates(request)
        key = keys[self._next % len(keys)]
        self._next += 1
        return RoutingDecision(key[0], key[1])


class RandomPolicy(PolicyBase):
    """Each request goes to an eligible worker key chosen uniformly at random."""

    def select(self, request: RouteRequest) -> RoutingDecision:
        key = self._rng.choice(self.candidates(request))
        return RoutingDecision(key[0], key[1])


class DirectPolicy(PolicyBase):
    """Each request names its worker (nvext `backend_instance_id`)."""

    def select(self, request: RouteRequest) -> RoutingDecision:
        if request.backend_instance_id is None:
            raise InvalidRequestError(
                "router mode 'direct' needs nvext.backend_instance_id on every request",
                param="nvext.backend_instance_id",
            )
        key = self._rng.choice(self.candidates(request))
        return RoutingDecision(key[0], key[1])


def make_policy(config: RouterConfig, rng: random.Random | None = None) -> RoutingPolicy:
    """The policy for `config.router_mode`."""
    mode = config.router_mode
    if mode == "round-robin":
        return RoundRobinPolicy(config, rng)
    if mode == "random":
        return RandomPolicy(config, rng)
    if mode == "direct":
        return DirectPolicy(config, rng)
    if mode == "kv":
        return KvPolicy(config, rng)
    raise ConfigError(f"unknown router mode {mode!r}")
