"""Pod templates of a multi-node TensorRT-LLM group: the SSH key pair Secret mounted in every
pod, and the workers' sshd port and probe (`dynamo.deploy.multinode_mpi` writes their commands).

The Secret is named by the operator config (`dynamo-operator.mpiRun.secretName`); it must hold
`private.key` and `private.key.pub` in the graph's namespace (docs/multinode.md).
"""

from __future__ import annotations

import copy
from typing import Any

from dynamo.deploy.builder import ServiceSpec
from dynamo.deploy.multinode import Role
from dynamo.deploy.multinode_mpi import (
    PRIVATE_KEY,
    PUBLIC_KEY,
    SSH_KEY_MOUNT,
    SSH_PORT,
    SSH_PORT_NAME,
)
from dynamo.operator.config import OperatorConfig
from dynamo.runtime.errors import ConfigError

SSH_KEY_VOLUME = "mpi-ssh-key"
PRIVATE_KEYS = (PRIVATE_KEY, PUBLIC_KEY)
SECRET_VALUE = "dynamo-operator.mpiRun.secretName (DYN_OPERATOR_MPI_RUN_SECRET_NAME)"
# Read by the key owner only; the pod's fsGroup adds group read. The pods copy the key out.
SSH_KEY_MODE = 0o600
# A worker is ready once its sshd listens (Dynamo's timing: sshd starts after key generation).
WORKER_READINESS = {
    "tcpSocket": {"port": SSH_PORT_NAME},
    "initialDelaySeconds": 20,
    "periodSeconds": 20,
    "timeoutSeconds": 5,
    "failureThreshold": 10,
}


def needs_mpi(svc: ServiceSpec) -> bool:
    return svc.node_count > 1 and svc.backend_framework == "trtllm"


def mpi_secret(svc: ServiceSpec, config: OperatorConfig) -> str:
    """The SSH key Secret of a multi-node TensorRT-LLM service; a `ConfigError` naming the
    operator value when none is configured."""
    if not config.mpi_run_secret_name:
        raise ConfigError(
            f"spec.services.{svc.name}.multinode: multi-node TensorRT-LLM runs mpirun over SSH "
            f"and needs an SSH key pair Secret: set {SECRET_VALUE} to the name of a Secret "
            "with keys private.key and private.key.pub in the graph's namespace (see "
            "docs/multinode.md)"
        )
    return config.mpi_run_secret_name


def with_ssh(template: dict[str, Any], secret: str, role: Role) -> dict[str, Any]:
    """`template` (a pod template of the group) with the key Secret mounted read-only at
    /ssh-pk; a worker also gets the `ssh` port and a TCP readiness probe on it, no others."""
    out = copy.deepcopy(template)
    spec = out["spec"]
    volume = {"name": SSH_KEY_VOLUME, "secret": {"secretName": secret, "defaultMode": SSH_KEY_MODE}}
    spec["volumes"] = [*spec.get("volumes", []), volume]
    main = spec["containers"][0]
    mount = {"name": SSH_KEY_VOLUME, "mountPath": SSH_KEY_MOUNT, "readOnly": True}
    main["volumeMounts"] = [*main.get("volumeMounts", []), mount]
    if role == "worker":
        port = {"name": SSH_PORT_NAME, "containerPort": SSH_PORT, "protocol": "TCP"}
        main["ports"] = [*main.get("ports", []), port]
        for probe in ("livenessProbe", "startupProbe"):
            main.pop(probe, None)
        main["readinessProbe"] = copy.deepcopy(WORKER_READINESS)
    return out
