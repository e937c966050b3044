"""`python -m dynamo.frontend`: one parser over the runtime, router and frontend configs.

Every flag also reads its `DYN_*` env var (flag beats env beats default). The process serves
until SIGINT/SIGTERM, then stops taking requests and shuts the runtime down. With
`--num-http-workers N` > 1 it supervises N such processes instead (`http_workers`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence

from dynamo import __version__
from dynamo.frontend.config import FrontendConfig
from dynamo.frontend.http_workers import default_http_workers, supervise
from dynamo.frontend.inflight import task_summary
from dynamo.frontend.server import Frontend
from dynamo.frontend.siblings import HttpWorkerRole, Siblings
from dynamo.protocols.model_card import ModelCard
from dynamo.router.base import RoutingPolicy
from dynamo.router.config import RouterConfig, log_level, routing_process_parser
from dynamo.router.kv_policy import KvPolicy
from dynamo.router.policies import make_policy
from dynamo.router.replica_sync import ReplicaSync, replica_sync_topic
from dynamo.runtime.config import RuntimeConfig, resolve
from dynamo.runtime.discovery.base import FRONTENDS_ROOT
from dynamo.runtime.errors import ConfigError, DynamoError
from dynamo.runtime.observability import setup_observability

log = logging.getLogger("dynamo.frontend")


def build_parser() -> argparse.ArgumentParser:
    return routing_process_parser(
        "python -m dynamo.frontend",
        "OpenAI-compatible HTTP frontend: discovers models, routes, streams.",
        FrontendConfig,
        "HTTP frontend",
    )


def parse_configs(
    argv: Sequence[str] | None = None,
) -> tuple[RuntimeConfig, FrontendConfig, RouterConfig, str]:
    args = build_parser().parse_args(argv)
    frontend_cfg, router_cfg = resolve(FrontendConfig, args), resolve(RouterConfig, args)
    if frontend_cfg.router_conditional_disagg and router_cfg.router_mode != "kv":
        raise ConfigError(
            "--router-conditional-disagg needs --router-mode kv (it reads the decode "
            "workers' KV events to know how much of a prompt they hold)"
        )
    return resolve(RuntimeConfig, args), frontend_cfg, router_cfg, log_level(args)


def policy_factory(
    router_cfg: RouterConfig, sync: ReplicaSync | None
) -> Callable[[ModelCard], RoutingPolicy]:
    """One routing policy per model; with replica sync, KV policies share active sequences
    with the other frontend replicas of the namespace."""

    def make(card: ModelCard) -> RoutingPolicy:
        policy = make_policy(router_cfg)
        if sync is not None and isinstance(policy, KvPolicy):
            sync.attach(policy)
        return policy

    return make


async def serve(
    runtime_cfg: RuntimeConfig,
    cfg: FrontendConfig,
    router_cfg: RouterConfig,
    role: HttpWorkerRole | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; `role`: as one of the `--num-http-workers` processes."""
    from dynamo.runtime.distributed import DistributedRuntime

    runtime = await DistributedRuntime.create(runtime_cfg)
    sync = None
    if router_cfg.router_replica_sync and router_cfg.router_mode == "kv":
        sync = ReplicaSync(replica_sync_topic(runtime_cfg.namespace, "frontend"))
        await sync.start(runtime)
    frontend = Frontend(
        runtime,
        cfg,
        policy_factory(router_cfg, sync),
        namespace=runtime_cfg.namespace,
        version=__version__,
        # only the KV router reads KV events (and not in approximate mode)
        use_kv_events=router_cfg.router_mode == "kv" and router_cfg.kv_events,
        reuse_port=role is not None,
    )
    siblings = None
    if role is not None:
        siblings = frontend.app.siblings = Siblings(role, frontend.metrics, frontend.models)
        frontend.app.started = role.started  # the same /v1/models from every process
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def list_inflight() -> None:  # `kill -USR1`: where each open request waits
        extra = [
            f"{len(frontend.connections())} HTTP connections",
            *([f"HTTP worker process {role.index} of {role.count}"] if role else []),
            *runtime.request_client.describe(),
            task_summary(),
        ]
        log.warning("%s", frontend.app.inflight.report(extra))

    loop.add_signal_handler(signal.SIGUSR1, list_inflight)
    try:
        await frontend.start()
        url = advertised_url(frontend, runtime_cfg)
        if role is None or role.index == 0:  # one entry per port: its /metrics covers all
            await runtime.discovery.put(
                f"{FRONTENDS_ROOT}/{runtime_cfg.namespace}/{runtime.instance_id:x}",
                {"url": url, "metrics_url": f"{url}/metrics"},
            )
        if siblings is not None:
            await siblings.start()  # the supervisor reads its socket as "serving"
        log.info(
            "serving namespace %r with router mode %s on %s",
            runtime_cfg.namespace,
            router_cfg.router_mode,
            frontend.url,
        )
        await stop.wait()
        log.info("shutting down")
    finally:
        if siblings is not None:
            await siblings.close()
        await frontend.stop()
        if sync is not None:
            await sync.close()
        await runtime.shutdown()


def advertised_url(frontend: Frontend, runtime_cfg: RuntimeConfig) -> str:
    """The frontend's URL for peers (the planner scrapes its /metrics): a wildcard bind is
    advertised with the request plane's host, which is the pod IP in a cluster."""
    if frontend.config.http_host in ("0.0.0.0", "::", ""):
        scheme = "https" if frontend.config.tls_cert_path else "http"
        return f"{scheme}://{runtime_cfg.tcp_host}:{frontend.port}"
    return frontend.url


def _event_loop_policy() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: Sequence[str] | None = None) -> int:
    try:
        runtime_cfg, cfg, router_cfg, level = parse_configs(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        setup_observability("frontend", level)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    role = HttpWorkerRole.from_env()
    workers = cfg.num_http_workers or default_http_workers()
    if role is None and workers > 1:
        if router_cfg.router_mode == "kv" and not router_cfg.kv_events:
            log.warning(
                "--no-kv-events with %d HTTP worker processes: each predicts the workers' caches "
                "from its own routing decisions only, so a prefix may be routed by a process "
                "that has not seen it (as with separate frontend replicas)",
                workers,
            )
        try:
            return supervise(
                sys.argv[1:] if argv is None else argv,
                runtime_cfg,
                cfg,
                workers,
                replica_sync=router_cfg.router_mode == "kv",
            )
        except ConfigError as exc:
            log.error("%s", exc)
            return 2
        except OSError as exc:
            log.error("cannot serve: %s", exc)
            return 1
    _event_loop_policy()
    try:
        asyncio.run(serve(runtime_cfg, cfg, router_cfg, role))
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except DynamoError as exc:
        log.error("cannot serve: %s", exc)
        return 1
    except OSError as exc:
        log.error("cannot serve: %s", exc)
        return 1
    return 0
