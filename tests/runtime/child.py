"""Child processes for runtime integration tests: `python child.py <mode> [args]`.

Each mode prints `READY ...` once it is set up, then runs until killed (or signalled).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.config import RuntimeConfig, resolve
from dynamo.runtime.discovery.factory import make_discovery
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.lifecycle import run_until_signal
from dynamo.runtime.transport.base import RequestContext
from dynamo.runtime.transport.nats_request import NatsRequestServer
from dynamo.runtime.transport.tcp import TcpRequestServer


async def register(key: str) -> None:
    """Put `key` in the discovery backend named by the environment, then sleep."""
    discovery = make_discovery(resolve(RuntimeConfig))
    await discovery.start()
    await discovery.put(key, {"pid": os.getpid()})
    print("READY", os.getpid(), flush=True)
    await asyncio.Event().wait()


async def count_handler(
    request: dict[str, Any], ctx: RequestContext
) -> AsyncIterator[dict[str, Any]]:
    """Yield `n` items, `delay_s` apart; report on stdout if cancelled."""
    try:
        for i in range(int(request.get("n", 3))):
            if request.get("delay_s"):
                await asyncio.sleep(float(request["delay_s"]))
            yield {"i": i, "pid": os.getpid()}
    except asyncio.CancelledError:
        print("CANCELLED", ctx.request_id, f"stopped={ctx.is_stopped()}", flush=True)
        raise


async def serve_tcp() -> None:
    """A bare TCP request-plane server with the `count` handler."""
    server = TcpRequestServer()
    server.register("count", count_handler)
    print("READY", await server.start(), flush=True)
    await asyncio.Event().wait()


async def serve_nats(name: str) -> None:
    """A bare NATS request-plane server ($NATS_SERVER) with `count` served as `name`."""
    server = NatsRequestServer(os.environ["NATS_SERVER"])
    server.register(name, count_handler)
    await server.start()
    print("READY", server.subject(name), flush=True)
    await asyncio.Event().wait()


def serve_runtime() -> None:
    """A worker: serve `count` on dyn://$DYN_NAMESPACE.worker.generate until SIGTERM."""
    config = resolve(RuntimeConfig)

    async def setup(runtime: DistributedRuntime) -> None:
        address = EndpointAddress(config.namespace, "worker", "generate")
        served = await runtime.serve_endpoint(address, count_handler)
        print("READY", f"{served.instance_id:x}", runtime.server_address, flush=True)

    code = run_until_signal(setup, config)
    print("EXIT", code, flush=True)
    raise SystemExit(code)


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "register":
        asyncio.run(register(*args))
    elif mode == "serve-runtime":
        serve_runtime()
    elif mode == "serve-tcp":
        asyncio.run(serve_tcp())
    elif mode == "serve-nats":
        asyncio.run(serve_nats(*args))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
