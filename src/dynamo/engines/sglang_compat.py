"""Where SGLang's Python API differs between the versions we support (0.5.4 to 0.5.23): each
difference found by looking at the object we were given (signatures, attributes), never at a
version string. Pure functions over SGLang's objects and plain data.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dynamo.engines.zmq_kv_events import external_hash
from dynamo.engines.zmq_kv_subscriber import publisher_binds

# SGLang <= 0.5.9 refuses `max_new_tokens + prompt >= context_len` (newer: `>`); keeping this
# one token back works with every version.
CONTEXT_RESERVE_TOKENS = 1


def replace_server_args(args: Any, **changes: Any) -> Any:
    """A copy of SGLang's `ServerArgs` with `changes`: a dataclass up to ~0.5.2x, a msgspec
    struct in 0.5.23 (which `dataclasses.replace` refuses)."""
    if dataclasses.is_dataclass(args) and not isinstance(args, type):
        return dataclasses.replace(args, **changes)
    if hasattr(type(args), "__struct_fields__"):
        structs = importlib.import_module("msgspec.structs")
        return structs.replace(args, **changes)
    new = copy.copy(args)
    for name, value in changes.items():
        setattr(new, name, value)
    return new


def accepts_rid(async_generate: Callable[..., Any]) -> bool:
    """Whether `Engine.async_generate` takes our request id (`rid`, SGLang >= 0.5.7)."""
    try:
        params = inspect.signature(async_generate).parameters
    except (TypeError, ValueError):
        return False
    return "rid" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def incremental_streaming(server_args: Any) -> bool:
    """Whether SGLang streams only the new tokens: `incremental_streaming_output` (newer) or
    `stream_output` (<= 0.5.9); otherwise each chunk carries all tokens so far."""
    for name in ("incremental_streaming_output", "stream_output"):
        if hasattr(server_args, name):
            return bool(getattr(server_args, name))
    return False


def kv_events_config(raw: str | Mapping[str, Any] | None, free_port: int) -> dict[str, Any]:
    """SGLang's `--kv-events-config` as a dict; unset: a ZMQ publisher binding a wildcard
    endpoint on `free_port` (we connect on loopback)."""
    if not raw:
        return {"publisher": "zmq", "endpoint": f"tcp://*:{free_port}", "topic": "kv-events"}
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        cfg = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"--kv-events-config is not JSON: {exc}") from exc
    if not isinstance(cfg, dict):
        raise ValueError("--kv-events-config must be a JSON object")
    return cfg


def subscriber_binds(cfg: Mapping[str, Any]) -> bool:
    """Whether our SUB socket binds: when SGLang's PUB connects. SGLang 0.5.23's `bind` option
    says which side binds; without it (older versions) SGLang binds wildcard/ipc endpoints."""
    bind = cfg.get("bind")
    if isinstance(bind, bool):
        return not bind
    return not publisher_binds(str(cfg.get("endpoint", "tcp://*:5557")))


def max_running_requests(
    internal_states: Sequence[Mapping[str, Any]] | None, server_args: Any, total_tokens: int
) -> int:
    """The most requests SGLang runs at once.

    0.5.23 reports the scheduler's figure in `get_internal_state()`; 0.5.4 reports none, so
    the configured `--max-running-requests`, else the scheduler's default when unset
    (`max_total_num_tokens // 2`, an upper bound: SGLang also caps it by its request pool).
    """
    for state in internal_states or ():
        for key in ("effective_max_running_requests_per_dp", "max_running_requests"):
            value = state.get(key)
            if isinstance(value, int) and value > 0:
                return value
    configured = getattr(server_args, "max_running_requests", None)
    if isinstance(configured, int) and configured > 0:
        return configured
    return max(1, total_tokens // 2)


class PageParents:
    """The parent of a page in SGLang 0.5.4's KV events, learned from the prompts we send.

    0.5.4 hashes each page alone (`hash(tuple(page))`) and sends `parent_block_hash=None` for
    the first page of every new radix node, so a prompt extending a cached prefix looks like a
    new root. The page before each page of our prompts is its parent; newer SGLang chains its
    hashes (and sends the parent), so their hashes never match these keys.
    """

    def __init__(self, max_pages: int = 100_000) -> None:
        self._parents: OrderedDict[int, int] = OrderedDict()
        self._max_pages = max_pages

    def learn(self, tokens: Sequence[int], page_size: int) -> None:
        previous: int | None = None
        for start in range(0, len(tokens) - page_size + 1, page_size):
            page = external_hash(hash(tuple(tokens[start : start + page_size])))
            if previous is not None:
                self._parents[page] = previous
                self._parents.move_to_end(page)
            previous = page
        while len(self._parents) > self._max_pages:
            self._parents.popitem(last=False)

    def parent(self, block_hash: int) -> int | None:
        return self._parents.get(block_hash)
