"""Where the Kubernetes API server is: an explicit `KubeConnection`, else the in-cluster
service account, else `KUBECONFIG` / `~/.kube/config`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from dynamo.runtime.errors import ConfigError

INSTALL_HINT = "the Kubernetes client needs lightkube: pip install 'pydynamo[operator]'"


@dataclass(frozen=True)
class KubeConnection:
    """An explicit API server to talk to (instead of in-cluster or kubeconfig settings)."""

    server: str
    token: str | None = None
    insecure: bool = False
    ca_path: str | None = None
    namespace: str | None = None  # the default namespace of namespaced calls

    def as_kubeconfig(self) -> dict[str, Any]:
        """This connection as a kubeconfig document."""
        cluster: dict[str, Any] = {"server": self.server}
        if self.insecure:
            cluster["insecure-skip-tls-verify"] = True
        if self.ca_path:
            cluster["certificate-authority"] = self.ca_path
        user: dict[str, Any] = {"token": self.token} if self.token else {"username": "anonymous"}
        context: dict[str, Any] = {"cluster": "target", "user": "user"}
        if self.namespace:
            context["namespace"] = self.namespace
        return {
            "clusters": [{"name": "target", "cluster": cluster}],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "ctx", "context": context}],
            "current-context": "ctx",
        }


async def load_config(connection: KubeConnection | None) -> Any:
    """The lightkube `KubeConfig` of `connection`, else of the environment (read off the
    event loop: it reads files). Raises `ConfigError` when there is none."""
    try:
        from lightkube import KubeConfig
        from lightkube.core.exceptions import ConfigError as LightkubeConfigError
    except ImportError as exc:
        raise ConfigError(INSTALL_HINT) from exc
    try:
        if connection is not None:
            return KubeConfig.from_dict(connection.as_kubeconfig())
        return await asyncio.to_thread(KubeConfig.from_env)
    except (LightkubeConfigError, OSError, ValueError) as exc:
        raise ConfigError(f"no Kubernetes configuration: {exc}") from exc
