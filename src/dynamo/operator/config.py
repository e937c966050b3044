"""Operator settings: one frozen dataclass; flags (`--namespace`) and `DYN_OPERATOR_*` env derive
from it. The dynamo-platform chart sets the env through a ConfigMap."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from dynamo import __version__
from dynamo.runtime.config import option

DEFAULT_IMAGE = f"pydynamo/runtime:{__version__}"
DISCOVERY_BACKENDS = ("kubernetes", "etcd")


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    """What the operator watches and what it injects into every graph it deploys."""

    namespace: str | None = option(
        None,
        help="watch only this Kubernetes namespace (namespace-restricted mode); all when unset",
        env="DYN_OPERATOR_NAMESPACE",
    )
    default_image: str = option(
        DEFAULT_IMAGE,
        help="image of graph services whose mainContainer names none",
        env="DYN_OPERATOR_DEFAULT_IMAGE",
    )
    discovery_backend: str = option(
        "kubernetes",
        help="discovery injected into graph services (a DGD annotation may pick etcd)",
        choices=DISCOVERY_BACKENDS,
        env="DYN_OPERATOR_DISCOVERY_BACKEND",
    )
    etcd_address: str = option(
        "",
        help="etcd URL injected as ETCD_ENDPOINTS (none when empty)",
        env="DYN_OPERATOR_ETCD_ADDRESS",
    )
    nats_address: str = option(
        "",
        help="NATS URL injected as NATS_SERVER (none when empty)",
        env="DYN_OPERATOR_NATS_ADDRESS",
    )
    health_port: int = option(
        8081,
        help="port of the /healthz liveness endpoint (0: off)",
        env="DYN_OPERATOR_HEALTH_PORT",
    )
    metrics_port: int = option(
        0,
        help="port of the Prometheus /metrics endpoint (0: off; the chart sets 8082)",
        env="DYN_OPERATOR_METRICS_PORT",
    )
    profiler_service_account: str = option(
        "",
        help="ServiceAccount of DGDR profiling Jobs (empty: one per request, made by the operator, "
        "that may write only its output ConfigMap)",
        env="DYN_OPERATOR_PROFILER_SERVICE_ACCOUNT",
    )
    profiler_hf_token_secret: str = option(
        "",
        help="Secret (`name` or `name:key`, key HF_TOKEN by default) set as HF_TOKEN in profiling "
        "Jobs whose DGDR names none (empty: none)",
        env="DYN_OPERATOR_PROFILER_HF_TOKEN_SECRET",
    )
    profiler_image_pull_secrets: str = option(
        "",
        help="comma-separated image pull secrets of every profiling Job (empty: none)",
        env="DYN_OPERATOR_PROFILER_IMAGE_PULL_SECRETS",
    )
    profiler_backoff_limit: int = option(
        1,
        help="retries of a failed profiling pod before its Job fails",
        env="DYN_OPERATOR_PROFILER_BACKOFF_LIMIT",
    )
    profiler_deadline_s: int = option(
        14400,
        help="time limit of a profiling Job whose DGDR sets no activeDeadlineSeconds",
        env="DYN_OPERATOR_PROFILER_DEADLINE_S",
    )
    profiler_ttl_s: int = option(
        86400,
        help="seconds a finished profiling Job and its pods are kept (ttlSecondsAfterFinished)",
        env="DYN_OPERATOR_PROFILER_TTL_S",
    )
    lws_enabled: bool = option(
        False,
        help="LeaderWorkerSet (leaderworkerset.x-k8s.io) is installed: multinode services run "
        "as LeaderWorkerSets; without it a multinode graph fails",
        env="DYN_OPERATOR_LWS_ENABLED",
    )
    grove_enabled: bool = option(
        False,
        help="Grove (grove.io) is installed: every graph (unless annotated "
        'nvidia.com/enable-grove: "false") runs as one PodCliqueSet',
        env="DYN_OPERATOR_GROVE_ENABLED",
    )
    grove_termination_delay: str = option(
        "15m",
        help="Grove's terminationDelay of a PodCliqueSet whose gang lost its minimum",
        env="DYN_OPERATOR_GROVE_TERMINATION_DELAY",
    )
    mpi_run_secret_name: str = option(
        "",
        help="Secret (keys private.key, private.key.pub) with the SSH key pair that multi-node "
        "TensorRT-LLM pods use for mpirun, in each graph's namespace (empty: such graphs fail)",
        env="DYN_OPERATOR_MPI_RUN_SECRET_NAME",
    )
    log_level: str = option(
        "info",
        help="log level",
        choices=("debug", "info", "warning", "error"),
        env="DYN_OPERATOR_LOG_LEVEL",
    )

    @property
    def infrastructure_env(self) -> Mapping[str, str]:
        """Env vars of the platform's etcd/NATS, set only when configured (a set NATS_SERVER
        makes the runtime connect to NATS)."""
        env: dict[str, str] = {}
        if self.etcd_address:
            env["ETCD_ENDPOINTS"] = self.etcd_address
        if self.nats_address:
            env["NATS_SERVER"] = self.nats_address
        return env
