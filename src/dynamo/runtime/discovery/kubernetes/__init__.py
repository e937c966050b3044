"""Kubernetes discovery: the API server's ConfigMaps as the registry, no etcd.

`discovery` holds the `Discovery` implementation (writing this process's record), `informer`
the reading side (records and EndpointSlices into a live view), `objects` the pure record,
readiness and heartbeat rules, `retry` the retry policy, and `api` its calls on the shared
client layer `dynamo.runtime.kube`.
"""

from dynamo.runtime.discovery.kubernetes.discovery import KubernetesDiscovery
from dynamo.runtime.discovery.kubernetes.objects import PodIdentity

__all__ = ["KubernetesDiscovery", "PodIdentity"]
