"""`python -m dynamo.testing.echo_worker`: a real worker process around `FakeWorker` (tests).

It registers the tiny model's card and serves the `FakeWorker` echo behaviour on the real
request plane, so frontend tests can run real processes (and kill -9 them) without an engine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

from dynamo.runtime.addressing import EndpointAddress
from dynamo.runtime.config import RuntimeConfig, add_arguments, resolve
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.transport.base import RequestContext
from dynamo.testing.fake_worker import FakeWorker
from dynamo.testing.frontend_harness import tiny_card


async def run(runtime_config: RuntimeConfig, args: argparse.Namespace) -> None:
    runtime = await DistributedRuntime.create(runtime_config)
    address = EndpointAddress(runtime_config.namespace, args.component, "generate")
    card = tiny_card(args.model_name, context_length=args.context_length)
    worker = FakeWorker(card, address=address, delay_s=args.delay_s)

    async def handler(request: dict[str, Any], context: RequestContext) -> AsyncIterator[dict]:
        async for out in worker.generate(request, context.request_id):
            yield out

    served = await runtime.serve_endpoint(address, handler, model_card=card)
    print(f"ready {served.instance_id:x}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runtime.shutdown(grace_s=1.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dynamo.testing.echo_worker")
    parser.add_argument("--model-name", default="tiny")
    parser.add_argument("--component", default="backend")
    parser.add_argument("--context-length", type=int, default=4096)
    parser.add_argument("--delay-s", type=float, default=0.0, help="pause before each token")
    add_arguments(parser, RuntimeConfig)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(resolve(RuntimeConfig, args), args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
