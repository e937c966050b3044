"""The `virtual` connector's protocol: the two keys a planner and an external scaler share in
discovery (etcd, or the embedded file store), and their values.

    v1/planner/{namespace}/decision  (the planner's)  {decision_id, num_prefill_workers,
                                                        num_decode_workers, reason}
    v1/planner/{namespace}/scaled    (the scaler's)   {scaled_decision_id, num_prefill_workers,
                                                        num_decode_workers}

A count of -1 means unset (the planner does not scale that role / the scaler does not know).
Each key lives under its writer's discovery lease: it disappears when its writer exits, so the
scaler's report is only believed while the scaler runs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from dynamo.planner.connectors.base import Role
from dynamo.runtime.config import RuntimeConfig, resolve
from dynamo.runtime.discovery.base import Discovery
from dynamo.runtime.discovery.factory import make_discovery
from dynamo.runtime.errors import ConfigError, UnavailableError

UNSET = -1
ROOT = "v1/planner"


def decision_key(namespace: str) -> str:
    return f"{ROOT}/{namespace}/decision"


def scaled_key(namespace: str) -> str:
    return f"{ROOT}/{namespace}/scaled"


def _count(value: Mapping[str, Any], field: str) -> int:
    raw = value.get(field, UNSET)
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < UNSET:
        raise ConfigError(f"{field} must be an integer >= -1, got {raw!r}")
    return raw


@dataclass(frozen=True)
class Decision:
    """What the planner asks for; `decision_id` grows by one per published decision."""

    decision_id: int
    num_prefill_workers: int = UNSET
    num_decode_workers: int = UNSET
    reason: str = ""

    def count(self, role: Role) -> int:
        return self.num_prefill_workers if role == "prefill" else self.num_decode_workers

    def counts(self) -> tuple[int, int]:
        """(prefill, decode)."""
        return self.num_prefill_workers, self.num_decode_workers

    def as_value(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_value(cls, value: Mapping[str, Any]) -> Decision:
        return cls(
            decision_id=_count(value, "decision_id"),
            num_prefill_workers=_count(value, "num_prefill_workers"),
            num_decode_workers=_count(value, "num_decode_workers"),
            reason=str(value.get("reason", "")),
        )


@dataclass(frozen=True)
class Scaled:
    """The scaler's report: the last decision it carried out (0: none yet) and what runs now."""

    scaled_decision_id: int
    num_prefill_workers: int = UNSET
    num_decode_workers: int = UNSET

    def count(self, role: Role) -> int:
        return self.num_prefill_workers if role == "prefill" else self.num_decode_workers

    def as_value(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_value(cls, value: Mapping[str, Any]) -> Scaled:
        return cls(
            scaled_decision_id=_count(value, "scaled_decision_id"),
            num_prefill_workers=_count(value, "num_prefill_workers"),
            num_decode_workers=_count(value, "num_decode_workers"),
        )


async def read_decision(discovery: Discovery, namespace: str) -> Decision | None:
    key = decision_key(namespace)
    value = (await discovery.get_prefix(key)).get(key)
    return None if value is None else Decision.from_value(value)


async def read_scaled(discovery: Discovery, namespace: str) -> Scaled | None:
    key = scaled_key(namespace)
    value = (await discovery.get_prefix(key)).get(key)
    return None if value is None else Scaled.from_value(value)


async def first_value(
    discovery: Discovery, key: str, accept: Callable[[Mapping[str, Any]], bool]
) -> dict[str, Any]:
    """The first value of `key` (now, or once written) that `accept` takes; deletes are
    skipped. Unbounded: callers bound it with a timeout."""
    watch = discovery.watch_prefix(key)
    try:
        async for event in watch:
            if event.key == key and event.value is not None and accept(event.value):
                return event.value
    finally:
        aclose = getattr(watch, "aclose", None)
        if aclose is not None:
            await aclose()
    raise UnavailableError(f"discovery stopped watching {key}")


async def open_discovery(config: RuntimeConfig | None = None) -> Discovery:
    """A started discovery client for `config` (default: the `DYN_*` / `ETCD_ENDPOINTS`
    environment, so the embedded file store unless told otherwise)."""
    if config is None:
        config = resolve(RuntimeConfig, None, os.environ)
    discovery = make_discovery(config)
    try:
        await discovery.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await discovery.close()
        raise
    return discovery
