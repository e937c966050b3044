"""The operator's and `dynamo check`'s Kubernetes client: the shared client layer
(`dynamo.runtime.kube`) as field manager `dynamo-operator`, knowing the custom kinds the
operator reads and writes."""

from __future__ import annotations

from dynamo.runtime.kube import CustomKind, KubeClient, KubeConnection

FIELD_MANAGER = "dynamo-operator"
CUSTOM_KINDS: tuple[CustomKind, ...] = (
    CustomKind("nvidia.com/v1alpha1", "DynamoGraphDeployment", "dynamographdeployments"),
    CustomKind(
        "nvidia.com/v1alpha1", "DynamoGraphDeploymentRequest", "dynamographdeploymentrequests"
    ),
    CustomKind("nvidia.com/v1alpha1", "DynamoComponentDeployment", "dynamocomponentdeployments"),
    CustomKind("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "leaderworkersets"),
    CustomKind("grove.io/v1alpha1", "PodCliqueSet", "podcliquesets"),
    CustomKind("grove.io/v1alpha1", "PodClique", "podcliques"),
    CustomKind("grove.io/v1alpha1", "PodCliqueScalingGroup", "podcliquescalinggroups"),
)


async def connect(connection: KubeConnection | None = None) -> KubeClient:
    """Use `connection`, else the in-cluster service account, else the kubeconfig."""
    return await KubeClient.connect(
        connection, field_manager=FIELD_MANAGER, custom_kinds=CUSTOM_KINDS
    )
