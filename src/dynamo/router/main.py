"""`python -m dynamo.router`: the standalone router process.

Flags: `RuntimeConfig` + `RouterConfig` + `StandaloneRouterConfig` (`--endpoint`,
`--router-component`); each also reads its `DYN_*` env var. The router mode defaults to `kv`
here (flag and `DYN_ROUTER_MODE` still win). Serves until SIGTERM/SIGINT, then drains.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from dynamo.router.config import RouterConfig, log_level, routing_process_parser
from dynamo.router.service import RouterService, StandaloneRouterConfig
from dynamo.runtime.config import RuntimeConfig, resolve
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.errors import ConfigError
from dynamo.runtime.lifecycle import run_until_signal
from dynamo.runtime.observability import setup_observability

log = logging.getLogger("dynamo.router")
DEFAULT_MODE = "kv"


def build_parser() -> argparse.ArgumentParser:
    return routing_process_parser(
        "python -m dynamo.router",
        "Standalone KV router: serves best_worker / mark / generate endpoints "
        f"over one endpoint's workers (router mode defaults to {DEFAULT_MODE!r} here).",
        StandaloneRouterConfig,
        "standalone router",
    )


def parse_configs(
    argv: Sequence[str] | None = None,
) -> tuple[RuntimeConfig, RouterConfig, StandaloneRouterConfig, str]:
    args = build_parser().parse_args(argv)
    level = log_level(args)
    router_env = {"DYN_ROUTER_MODE": DEFAULT_MODE, **os.environ}
    runtime = resolve(RuntimeConfig, args)
    router = resolve(RouterConfig, args, router_env)
    standalone = resolve(StandaloneRouterConfig, args)
    standalone.worker_address(runtime.namespace)  # a bad --endpoint fails here, before starting
    standalone.router_address(runtime.namespace, "generate")
    return runtime, router, standalone, level


def main(argv: Sequence[str] | None = None) -> int:
    try:
        runtime_cfg, router_cfg, cfg, level = parse_configs(argv)
    except ConfigError as exc:
        print(f"dynamo.router: error: {exc}", file=sys.stderr)
        return 2
    try:
        setup_observability("router", level)
    except ConfigError as exc:
        print(f"dynamo.router: error: {exc}", file=sys.stderr)
        return 2

    async def serve(runtime: DistributedRuntime) -> None:
        service = RouterService(runtime, router_cfg, cfg)
        try:
            await service.start()
            log.info(
                "router serving %s (mode %s, replica sync %s) over %s",
                service.addresses["generate"],
                router_cfg.router_mode,
                "on" if service.sync is not None else "off",
                service.worker_address,
            )
            await asyncio.Event().wait()  # serve until the drain cancels us
        finally:
            await service.close()

    return run_until_signal(serve, runtime_cfg)
