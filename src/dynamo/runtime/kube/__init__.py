"""The Kubernetes API client every pydynamo part uses (discovery, operator, planner).

    client = await KubeClient.connect(field_manager="dynamo-operator")  # or a KubeConnection
    try:
        dep = await client.get("apps/v1", "Deployment", "web", "default")  # None if missing
        found = await client.list("v1", "ConfigMap", "default", {"app": "web"})
        async for event, obj in client.watch("v1", "ConfigMap", "default",
                                             resource_version=found.resource_version):
            ...  # KubeWatchExpiredError (410): list again, watch from the new version
        await client.apply(manifest, force=True)  # server-side apply as `field_manager`
        await client.patch("apps/v1", "Deployment", "web", "default", {"spec": {...}})
    except KubeApiError as exc:  # `exc.status` (0: unreachable), `exc.transient`
        ...
    finally:
        await client.close()

Objects are plain dicts in and out. Kinds lightkube has no model for (CRDs) are declared
with `custom_kinds=[CustomKind(...)]`. lightkube is imported lazily, so the runtime works
without it until a client is built (then `ConfigError` says what to install).
"""

from dynamo.runtime.kube.client import CustomKind, KubeClient, Labels, ObjectList
from dynamo.runtime.kube.connection import KubeConnection
from dynamo.runtime.kube.errors import TRANSIENT_STATUSES, KubeApiError, KubeWatchExpiredError

__all__ = [
    "TRANSIENT_STATUSES",
    "CustomKind",
    "KubeApiError",
    "KubeClient",
    "KubeConnection",
    "KubeWatchExpiredError",
    "Labels",
    "ObjectList",
]
