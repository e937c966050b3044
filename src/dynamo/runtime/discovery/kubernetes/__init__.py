"""Kubernetes discovery: the API server's ConfigMaps as the registry, no etcd.

`discovery` holds the `Discovery` implementation, `objects` the pure ConfigMap layout and
heartbeat rules, `api` its ConfigMap calls on the shared client layer `dynamo.runtime.kube`.
"""

from dynamo.runtime.discovery.kubernetes.discovery import KubernetesDiscovery
from dynamo.runtime.discovery.kubernetes.objects import PodIdentity

__all__ = ["KubernetesDiscovery", "PodIdentity"]
