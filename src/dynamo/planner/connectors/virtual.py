"""The `virtual` connector: the planner publishes its decisions for an external system to carry
out, and waits (bounded) for that system to acknowledge them.

The protocol and its keys are in `virtual_protocol`; the external side is `virtual_client`
(`VirtualScalerClient`, and `dynamo planner decisions|follow` on the command line).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from dynamo.planner.connectors.base import ConnectorSettings, Role
from dynamo.planner.connectors.virtual_protocol import (
    UNSET,
    Decision,
    Scaled,
    decision_key,
    first_value,
    open_discovery,
    read_decision,
    read_scaled,
    scaled_key,
)
from dynamo.runtime.discovery.base import Discovery
from dynamo.runtime.errors import ConfigError, TransportError, UnavailableError

log = logging.getLogger(__name__)
DEFAULT_ACK_TIMEOUT_S = 60.0


class ScalerTimeoutError(TransportError):
    """The external scaler did not acknowledge a decision in time (it stays published)."""


class VirtualScaling:
    """`ScalingConnector` that hands decisions to an external scaler through discovery.
    `discovery` is a started client to share (else one is opened from the `DYN_*`
    environment and closed with the connector); `ack_timeout_s` bounds each wait."""

    def __init__(
        self,
        settings: ConnectorSettings,
        *,
        discovery: Discovery | None = None,
        ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
    ) -> None:
        if ack_timeout_s <= 0:
            raise ConfigError(f"ack_timeout_s must be > 0, got {ack_timeout_s}")
        self._settings = settings
        self._namespace = settings.namespace
        self._discovery = discovery
        self._owns_discovery = discovery is None
        self._ack_timeout_s = ack_timeout_s
        self._last: Decision | None = None
        self._next_id: int | None = None

    async def _store(self) -> Discovery:
        if self._discovery is None:
            self._discovery = await open_discovery()
        return self._discovery

    async def live_replicas(self) -> dict[Role, int]:
        """What the scaler last reported running, per role this planner scales."""
        store = await self._store()
        scaled = await read_scaled(store, self._namespace)
        live: dict[Role, int] = {}
        for role in self._settings.roles:
            count = UNSET if scaled is None else scaled.count(role)
            if count == UNSET:
                raise UnavailableError(
                    f"no external scaler has reported its {role} workers in namespace "
                    f"{self._namespace!r} (it reports with VirtualScalerClient.report/complete "
                    "or `dynamo planner follow`)"
                )
            live[role] = count
        return live

    async def _first_id(self, store: Discovery) -> int:
        """Continue after whatever a previous planner published or the scaler carried out."""
        decision = await read_decision(store, self._namespace)
        scaled = await read_scaled(store, self._namespace)
        seen = [0]
        seen += [decision.decision_id] if decision is not None else []
        seen += [scaled.scaled_decision_id] if scaled is not None else []
        return max(seen) + 1

    async def scale(self, targets: Mapping[Role, int], reason: str) -> None:
        """Publish `targets` as the next decision (unless it equals the last one, which the
        scaler acknowledged) and wait until the scaler reports `scaled_decision_id >=
        decision_id`; `ScalerTimeoutError` after `ack_timeout_s` (the decision stays
        published; the same targets next time are published again as a new decision)."""
        for role, target in targets.items():
            if role not in self._settings.roles:
                raise ConfigError(f"this planner does not scale the {role} role")
            if target < 0:
                raise ConfigError(f"{role}: replicas must be >= 0, got {target}")
        prefill, decode = targets.get("prefill", UNSET), targets.get("decode", UNSET)
        if self._last is not None and self._last.counts() == (prefill, decode):
            return
        store = await self._store()
        if self._next_id is None:
            self._next_id = await self._first_id(store)
        decision = Decision(self._next_id, prefill, decode, reason)
        await store.put(decision_key(self._namespace), decision.as_value())
        self._next_id += 1
        self._last = decision
        log.info(
            "published decision %d: prefill=%d decode=%d (%s)",
            decision.decision_id,
            prefill,
            decode,
            reason,
        )
        try:
            await self._wait_for_ack(store, decision.decision_id)
        except BaseException:
            # Not carried out (yet): the same targets next time are a new decision, which
            # also makes a scaler whose command failed try again.
            self._last = None
            raise

    async def _wait_for_ack(self, store: Discovery, decision_id: int) -> None:
        def done(value: Mapping[str, Any]) -> bool:
            return Scaled.from_value(value).scaled_decision_id >= decision_id

        try:
            async with asyncio.timeout(self._ack_timeout_s):
                await first_value(store, scaled_key(self._namespace), done)
        except TimeoutError:
            raise ScalerTimeoutError(
                f"the external scaler did not acknowledge decision {decision_id} within "
                f"{self._ack_timeout_s:g} s (namespace {self._namespace!r})"
            ) from None

    async def close(self) -> None:
        if self._owns_discovery and self._discovery is not None:
            discovery, self._discovery = self._discovery, None
            await discovery.close()
