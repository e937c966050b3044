"""`python -m dynamo.planner`: the SLA planner as a component of its graph.

Flags: `PlannerConfig` (and `--config FILE`), `RuntimeConfig`, `--log-level`. The planner
registers `{namespace}.planner.status` (its last decision) like any component, serves
`/health` and `/metrics` (`dynamo_planner_*`) on `--metric-reporting-prometheus-port`
(else the runtime's `--system-port`), and decides every `--adjustment-interval`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp

from dynamo.planner.config import PlannerConfig, build_parser, planner_config
from dynamo.planner.connectors import ConnectorSettings, make_connector
from dynamo.planner.loop import Planner
from dynamo.planner.metrics import PlannerMetrics
from dynamo.planner.observe import FrontendScrape, MetricSource, PrometheusQuery
from dynamo.planner.worker_load import WorkerLoads
from dynamo.router.config import log_level
from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.config import RuntimeConfig, add_arguments, resolve
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.errors import ConfigError
from dynamo.runtime.lifecycle import run_until_signal
from dynamo.runtime.observability import setup_observability
from dynamo.runtime.transport.base import RequestContext

log = logging.getLogger("dynamo.planner")
COMPONENT, ENDPOINT = "planner", "status"


def parser() -> argparse.ArgumentParser:
    p = build_parser()
    add_arguments(p, RuntimeConfig, title="runtime (discovery and transports)")
    p.add_argument(
        "--log-level", default=None, help="DEBUG, INFO, WARNING... [env DYN_LOG; default INFO]"
    )
    return p


def parse_configs(argv: Sequence[str] | None = None) -> tuple[RuntimeConfig, PlannerConfig, str]:
    args = parser().parse_args(argv)
    level = log_level(args)
    runtime = resolve(RuntimeConfig, args)
    planner_args = {k: v for k, v in vars(args).items() if k != "log_level"}
    return runtime, planner_config(planner_args), level


def connector_settings(config: PlannerConfig, namespace: str) -> ConnectorSettings:
    environment: Any = config.environment
    return ConnectorSettings(
        environment=environment,
        namespace=namespace,
        roles=config.roles,
        graph_name=os.environ.get("DYN_PARENT_DGD_K8S_NAME"),
        k8s_namespace=os.environ.get("DYN_PARENT_DGD_K8S_NAMESPACE"),
        prefill_service=config.prefill_service,
        decode_service=config.decode_service,
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        runtime_cfg, config, level = parse_configs(argv)
    except ConfigError as exc:
        print(f"dynamo.planner: error: {exc}", file=sys.stderr)
        return 2
    try:
        setup_observability("planner", level)
    except ConfigError as exc:
        print(f"dynamo.planner: error: {exc}", file=sys.stderr)
        return 2
    try:
        connector = make_connector(connector_settings(config, runtime_cfg.namespace))
    except ConfigError as exc:
        print(f"dynamo.planner: error: {exc}", file=sys.stderr)
        return 2
    metrics = PlannerMetrics()

    async def serve(runtime: DistributedRuntime) -> None:
        session = aiohttp.ClientSession()
        loads = WorkerLoads()
        source: MetricSource
        if config.metric_pulling_prometheus_endpoint:
            source = PrometheusQuery(
                config.metric_pulling_prometheus_endpoint, session, config.model_name
            )
        else:
            source = FrontendScrape(
                runtime.discovery, runtime_cfg.namespace, session, config.model_name
            )
        planner = Planner(config, connector, source, loads=loads, metrics=metrics)

        async def status(request: dict[str, Any], context: RequestContext) -> AsyncIterator[Any]:
            yield planner.status()

        try:
            loads.start(await runtime.event_subscriber(f"{runtime_cfg.namespace}."))
            runtime.metrics_registry = metrics.registry
            port = config.metric_reporting_prometheus_port or runtime_cfg.system_port
            if port is not None:
                await runtime.start_system_server(port)
            address = EndpointAddress(runtime_cfg.namespace, COMPONENT, ENDPOINT)
            await runtime.serve_endpoint(address, status)
            log.info(
                "planner %s: %s mode, %s environment, every %gs (TTFT %gms, ITL %gms)%s",
                address,
                config.mode,
                config.environment,
                config.interval_s,
                config.ttft_ms,
                config.itl_ms,
                ", dry run" if config.no_operation else "",
            )
            await planner.run()
        finally:
            await loads.close()
            await source.close()
            await connector.close()
            await session.close()

    return run_until_signal(serve, runtime_cfg, registry=metrics.registry)
