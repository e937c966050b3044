"""vLLM's side of disaggregated serving, as pure functions over plain data (no vLLM import).

A prefill or decode worker loads a vLLM KV connector (`--connector`, or vLLM's own
`--kv-transfer-config`). The prefill leg runs with `kv_transfer_params={"do_remote_decode": true}`
and one output token, and returns what vLLM reports as its `kv_transfer_params` (NIXL: the engine
id, block ids, host and port of the KV to pull) as the request's `disaggregated_params`; the
decode leg hands them back to vLLM, whose connector then loads the prompt's KV instead of
computing it. Connectors that key the KV by the prompt itself (vLLM's `ExampleConnector`,
LMCache) report no params: the prefill result is then `{"kv_transfer_params": None}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dynamo.protocols.engine import EngineRequest
from dynamo.protocols.model_card import WorkerRole
from dynamo.runtime.errors import ConfigError, KvTransferError

CONNECTOR_CHOICES = ("nixl", "lmcache", "none")

# `--connector NAME` → the fields of vLLM's KVTransferConfig (both roles use "kv_both").
CONNECTORS: dict[str, dict[str, Any]] = {
    "nixl": {"kv_connector": "NixlConnector", "kv_role": "kv_both"},
    "lmcache": {"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"},
}

# Connectors whose transfer library is a separate package: (import name, how to get it).
CONNECTOR_PACKAGES: dict[str, tuple[str, str]] = {
    "NixlConnector": ("nixl", "pip install nixl; NIXL needs an NVIDIA GPU build"),
    "LMCacheConnectorV1": ("lmcache", "pip install lmcache"),
}

CPU_CONNECTOR_HINT = (
    "on CPU use vLLM's file-based ExampleConnector: --kv-transfer-config "
    '\'{"kv_connector":"ExampleConnector","kv_role":"kv_both",'
    '"kv_connector_extra_config":{"shared_storage_path":"/some/shared/dir"}}\' '
    "(docs/engines.md)"
)

PREFILL_TRANSFER_PARAMS: dict[str, Any] = {"do_remote_decode": True}


def connector_config(
    connector: str | None, role: WorkerRole, *, has_kv_transfer_config: bool
) -> dict[str, Any] | None:
    """The KVTransferConfig fields `--connector` asks for; None for no connector of ours.

    Unset, a prefill or decode worker loads NIXL and an aggregated one none. vLLM's own
    `--kv-transfer-config` replaces `--connector` (naming both is an error).
    """
    if has_kv_transfer_config:
        if connector is not None:
            raise ConfigError(
                "--connector and --kv-transfer-config exclude each other: give one of them"
            )
        return None
    if connector is None:
        connector = "none" if role is WorkerRole.AGGREGATED else "nixl"
    if connector not in CONNECTOR_CHOICES:
        raise ConfigError(
            f"--connector {connector!r}: choose one of {', '.join(CONNECTOR_CHOICES)}"
        )
    if connector == "none":
        return None
    return dict(CONNECTORS[connector])


def check_connector(
    kv_connector: str | None, role: WorkerRole, *, installed: Callable[[str], bool]
) -> None:
    """Refuse at start what cannot transfer KV: a prefill/decode worker without a connector,
    or a connector whose transfer library is not installed."""
    if kv_connector is None:
        if role is not WorkerRole.AGGREGATED:
            raise ConfigError(
                f"a {role.value} worker needs a KV connector to hand the prompt's KV over "
                "(--connector nixl|lmcache or --kv-transfer-config); --connector none "
                "serves aggregated only"
            )
        return
    package = CONNECTOR_PACKAGES.get(kv_connector)
    if package is not None and not installed(package[0]):
        name, how = package
        raise ConfigError(
            f"vLLM's {kv_connector} needs the {name!r} package, which is not installed "
            f"({how}); {CPU_CONNECTOR_HINT}"
        )


def leg_kv_transfer_params(
    request: EngineRequest, role: WorkerRole, *, has_connector: bool
) -> dict[str, Any] | None:
    """The `kv_transfer_params` to hand vLLM for `request` on a worker of `role`.

    A prefill worker asks vLLM to keep the KV for a remote decode. Elsewhere, the request's
    `disaggregated_params` (a vLLM prefill worker's result) go back to vLLM as they came;
    malformed ones, or ones this worker cannot use, raise KvTransferError (the frontend then
    serves the request aggregated).
    """
    if role is WorkerRole.PREFILL:
        return dict(PREFILL_TRANSFER_PARAMS)
    params = request.get("disaggregated_params")
    if params is None:
        return None
    if not isinstance(params, dict) or "kv_transfer_params" not in params:
        raise KvTransferError(
            "disaggregated_params must be {'kv_transfer_params': ...} as a vLLM prefill worker "
            f"returns them, got {_short(params)}"
        )
    if not has_connector:
        raise KvTransferError(
            "this vLLM worker has no KV connector, so it cannot load a prefill worker's KV"
        )
    kv = params["kv_transfer_params"]
    if kv is None:  # the connector finds the KV by the prompt itself
        return None
    if not isinstance(kv, dict):
        raise KvTransferError(f"kv_transfer_params must be an object, got {_short(kv)}")
    return dict(kv)


def leg_sampling_kwargs(
    kwargs: dict[str, Any], role: WorkerRole, kv_transfer_params: dict[str, Any] | None
) -> dict[str, Any]:
    """`kwargs` of `vllm.SamplingParams` for one leg: a prefill computes one token only."""
    out = dict(kwargs)
    if role is WorkerRole.PREFILL:
        out["max_tokens"] = 1
        out["min_tokens"] = min(int(out.get("min_tokens") or 0), 1)
    if kv_transfer_params is not None:
        out["extra_args"] = {
            **(out.get("extra_args") or {}),
            "kv_transfer_params": kv_transfer_params,
        }
    return out


def prefill_result(kv_transfer_params: dict[str, Any] | None) -> dict[str, object]:
    """A prefill worker's `disaggregated_params` (what Dynamo's vLLM workers return)."""
    return {"kv_transfer_params": kv_transfer_params}


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
