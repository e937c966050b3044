"""The DynamoGraphDeploymentRequest (DGDR) model, `nvidia.com/v1alpha1`.

A DGDR names a model, a backend and SLA targets; the profiler turns it into a generated
DynamoGraphDeployment (kept in `status.generatedDeployment`, created when `autoApply`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from dynamo.deploy.graph import format_validation_error, read_manifest
from dynamo.deploy.kube import Condition, CrdModel, CustomResource
from dynamo.runtime.errors import ConfigError

DgdrState = Literal[
    "Initializing", "Pending", "Profiling", "Deploying", "Ready", "DeploymentDeleted", "Failed"
]


class ConfigMapKeyRef(CrdModel):
    """A key of a ConfigMap holding the profiling config."""

    name: str = Field(min_length=1, description="ConfigMap name.")
    key: str = Field(default="disagg.yaml", description="Key inside the ConfigMap.")


class SecretKeyRef(CrdModel):
    """A key of a Secret (the Hugging Face token of the profiling Job)."""

    name: str = Field(min_length=1, description="Secret name.")
    key: str = Field(default="HF_TOKEN", description="Key inside the Secret.")


class ProfilingConfig(CrdModel):
    """How the profiling Job runs and what it sweeps."""

    config: dict[str, Any] | None = Field(
        default=None, description="Profiler config (profile_sla format, arbitrary JSON)."
    )
    config_map_ref: ConfigMapKeyRef | None = Field(
        default=None, description="Base config read from a ConfigMap."
    )
    profiler_image: str | None = Field(default=None, description="Image of the profiling Job.")
    output_pvc: str | None = Field(default=None, description="PVC receiving profiling output.")
    resources: dict[str, Any] | None = Field(
        default=None, description="corev1.ResourceRequirements of the profiling Job."
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Tolerations of the profiling Job."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node selector of the profiling Job."
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Time limit of the profiling Job (default: the platform's)."
    )
    hf_token_secret: SecretKeyRef | None = Field(
        default=None,
        description="Secret key set as HF_TOKEN in the Job (default: the platform's, if any).",
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list,
        description="Image pull secrets of the Job, added to the platform's.",
    )


class DeploymentOverrides(CrdModel):
    """Overrides applied to the generated DGD."""

    name: str | None = Field(default=None, description="Name of the generated DGD.")
    namespace: str | None = Field(default=None, description="Namespace of the generated DGD.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra annotations.")
    workers_image: str | None = Field(default=None, description="Image for every worker.")


class DgdrSpec(CrdModel):
    """`DynamoGraphDeploymentRequest.spec`."""

    model: str = Field(min_length=1, description="Model to serve, e.g. Qwen/Qwen3-0.6B.")
    backend: Literal["auto", "vllm", "sglang", "trtllm"] = Field(
        description="Inference backend (auto picks one)."
    )
    use_mocker: bool = Field(default=False, description="Deploy mocker workers instead.")
    profiling_config: ProfilingConfig | None = Field(
        default=None, description="Profiling Job settings and sweep config."
    )
    enable_gpu_discovery: bool = Field(
        default=False, description="Deprecated: discover GPU hardware from nodes."
    )
    auto_apply: bool = Field(default=False, description="Create the generated DGD.")
    deployment_overrides: DeploymentOverrides | None = Field(
        default=None, description="Overrides for the generated DGD."
    )


class DeploymentRef(CrdModel):
    """The DGD a request created."""

    name: str | None = Field(default=None, description="DGD name.")
    namespace: str | None = Field(default=None, description="DGD namespace.")
    state: str | None = Field(default=None, description="DGD state.")
    created: bool = Field(default=False, description="Whether the DGD was created.")


class DgdrStatus(CrdModel):
    """`DynamoGraphDeploymentRequest.status`."""

    state: DgdrState | None = Field(default=None, description="Request state.")
    backend: str | None = Field(default=None, description="Resolved backend.")
    observed_generation: int | None = Field(default=None, description="Last handled generation.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Validation, Profiling, SpecGenerated, DeploymentReady.",
    )
    profiling_results: str | None = Field(
        default=None, description="Where the results are, e.g. configmap/<name>."
    )
    generated_deployment: dict[str, Any] | None = Field(
        default=None, description="The generated DynamoGraphDeployment."
    )
    deployment: DeploymentRef | None = Field(default=None, description="The created DGD.")


class DynamoGraphDeploymentRequest(CustomResource[DgdrSpec, DgdrStatus]):
    """An SLA-driven request for a graph (`dgdr`)."""

    kind: Literal["DynamoGraphDeploymentRequest"] = Field(
        default="DynamoGraphDeploymentRequest", description="DynamoGraphDeploymentRequest."
    )


def load_request(source: str | Path | Mapping[str, Any]) -> DynamoGraphDeploymentRequest:
    """Parse and validate a DGDR; `ConfigError` names the bad field paths."""
    doc = read_manifest(source, kind="DynamoGraphDeploymentRequest")
    try:
        return DynamoGraphDeploymentRequest.model_validate(doc, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from exc
