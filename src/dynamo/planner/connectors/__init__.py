"""Planner connectors: `local` (`dynamo serve`), `kubernetes` (the DGD), `virtual` (external).

`make_connector` imports only the implementation asked for, so the Kubernetes client is not
loaded by a planner under `dynamo serve`.
"""

from __future__ import annotations

import importlib
from typing import cast

from dynamo.planner.connectors.base import (
    ROLES,
    ConnectorSettings,
    Environment,
    Role,
    ScalingConnector,
)
from dynamo.runtime.errors import ConfigError

__all__ = [
    "ROLES",
    "ConnectorSettings",
    "Environment",
    "Role",
    "ScalingConnector",
    "make_connector",
]

# environment -> (module under dynamo.planner.connectors, class taking ConnectorSettings)
IMPLEMENTATIONS: dict[str, tuple[str, str]] = {
    "local": ("local", "LocalScaling"),
    "kubernetes": ("kubernetes", "KubernetesScaling"),
    "virtual": ("virtual", "VirtualScaling"),
}


def make_connector(settings: ConnectorSettings) -> ScalingConnector:
    """The connector for `settings.environment`."""
    try:
        module_name, class_name = IMPLEMENTATIONS[settings.environment]
    except KeyError:
        raise ConfigError(f"unknown planner environment {settings.environment!r}") from None
    module = importlib.import_module(f"{__name__}.{module_name}")
    return cast(ScalingConnector, getattr(module, class_name)(settings))
