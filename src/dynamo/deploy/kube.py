"""Kubernetes building blocks shared by the Dynamo CRD models (metadata, env vars, conditions).

Every model validates camelCase keys exactly as the API server stores them; Python code may
also construct them with snake_case field names.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Generic, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel


class CrdModel(BaseModel):
    """A closed CRD object: unknown keys are rejected (the structural schema would prune them)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
    )


API_VERSION: Final = "nvidia.com/v1alpha1"

SpecT = TypeVar("SpecT", bound=BaseModel)
StatusT = TypeVar("StatusT", bound=BaseModel)


class OpenModel(CrdModel):
    """A passed-through Kubernetes object (pod spec, container): typed where we read it."""

    model_config = ConfigDict(extra="allow")


def _quantity_to_str(value: Any) -> Any:
    # YAML turns `gpu: 1` into an int; Kubernetes quantities are strings.
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return str(value)
    return value


Quantity = Annotated[str, BeforeValidator(_quantity_to_str)]
"""A Kubernetes resource quantity such as `"1"`, `"500m"`, `"8Gi"`."""


class ObjectMeta(OpenModel):
    """Standard object metadata; server-set fields (uid, resourceVersion, ...) pass through."""

    name: str = Field(min_length=1, description="Object name, unique in its namespace.")
    namespace: str | None = Field(default=None, description="Kubernetes namespace.")
    labels: dict[str, str] = Field(default_factory=dict, description="Object labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Object annotations.")


class EnvVar(CrdModel):
    """A container environment variable (`corev1.EnvVar`)."""

    name: str = Field(min_length=1, description="Variable name.")
    value: str | None = Field(default=None, description="Literal value.")
    value_from: dict[str, Any] | None = Field(
        default=None, description="Source for the value (secretKeyRef, fieldRef, ...)."
    )


class Condition(CrdModel):
    """A `metav1.Condition`."""

    type: str = Field(description="Condition type, e.g. Ready.")
    status: str = Field(description="True, False or Unknown.")
    reason: str | None = Field(default=None, description="Machine-readable reason.")
    message: str | None = Field(default=None, description="Human-readable message.")
    last_transition_time: str | None = Field(
        default=None, description="RFC 3339 time of the last status change."
    )
    observed_generation: int | None = Field(
        default=None, description="Generation the condition was computed from."
    )


class Container(OpenModel):
    """A `corev1.Container`; the fields the graph builder reads are typed, the rest pass through."""

    name: str | None = Field(default=None, description="Container name (the operator uses main).")
    image: str | None = Field(default=None, description="Container image.")
    command: list[str] | None = Field(default=None, description="Entrypoint array.")
    args: list[str] | None = Field(default=None, description="Arguments to the entrypoint.")
    working_dir: str | None = Field(default=None, description="Working directory.")
    env: list[EnvVar] | None = Field(default=None, description="Environment variables.")


class ExtraPodSpec(OpenModel):
    """A full `corev1.PodSpec` (inlined, passed through) plus `mainContainer`."""

    main_container: Container | None = Field(
        default=None, description="Merged into the operator-generated main container."
    )


class ExtraPodMetadata(CrdModel):
    """Labels and annotations added to generated pods."""

    labels: dict[str, str] = Field(default_factory=dict, description="Pod labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Pod annotations.")


class CustomResource(CrdModel, Generic[SpecT, StatusT]):
    """What every Dynamo custom resource shares: apiVersion, metadata, spec and status.

    A resource subclasses it with its spec and status types and narrows `kind` to a one-value
    `Literal` (the field that tells the kinds apart)."""

    api_version: Literal["nvidia.com/v1alpha1"] = Field(
        default=API_VERSION, description="nvidia.com/v1alpha1."
    )
    kind: str = Field(description="The resource kind (each subclass fixes it).")
    metadata: ObjectMeta = Field(description="Object metadata.")
    spec: SpecT = Field(description="Desired state.")
    status: StatusT | None = Field(default=None, description="Observed state.")

    @property
    def name(self) -> str:
        return self.metadata.name
