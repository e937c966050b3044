"""Build the discovery backend a `RuntimeConfig` names."""

from __future__ import annotations

import os

from dynamo.runtime.config import RuntimeConfig
from dynamo.runtime.discovery.base import Discovery
from dynamo.runtime.errors import ConfigError


def make_discovery(config: RuntimeConfig) -> Discovery:
    """A not-yet-started `Discovery` for `config.discovery_backend`."""
    backend = config.discovery_backend
    if backend == "mem":
        from dynamo.runtime.discovery.mem import MemoryDiscovery

        return MemoryDiscovery()
    if backend == "file":
        from dynamo.runtime.discovery.file import FileDiscovery

        return FileDiscovery(config.file_kv_root, ttl_s=config.lease_ttl_s)
    if backend == "etcd":
        from dynamo.runtime.discovery.etcd import EtcdDiscovery

        return EtcdDiscovery(config.etcd_endpoints, ttl_s=config.lease_ttl_s)
    if backend == "kubernetes":
        from dynamo.runtime.discovery.kubernetes import KubernetesDiscovery, PodIdentity

        pod = PodIdentity.from_env(os.environ)
        if config.kube_discovery_liveness == "readiness" and pod is None:
            raise ConfigError(
                "--kube-discovery-liveness readiness needs POD_NAME (downward API): readers "
                "match the process to its pod in the discovery Service's EndpointSlices"
            )
        return KubernetesDiscovery(
            namespace=os.environ.get("POD_NAMESPACE") or None,
            ttl_s=config.lease_ttl_s,
            # Outside readiness mode the pod is not named: a pod without a discovery Service
            # selecting it would never be Ready in a slice, and its keys never visible.
            pod=pod if config.kube_discovery_liveness == "readiness" else None,
        )
    raise ConfigError(
        f"unknown discovery backend {backend!r}; expected mem, file, etcd or kubernetes"
    )
