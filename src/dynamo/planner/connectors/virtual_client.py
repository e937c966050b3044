"""The external side of the `virtual` connector: read the planner's decisions, carry them out,
acknowledge them.

    async with VirtualScalerClient("my-namespace") as client:
        await client.report(prefill=1, decode=1)       # what runs before any decision
        while True:
            decision = await client.wait()             # the next decision not yet carried out
            ...                                        # start / stop workers
            await client.complete(decision)            # scaled_decision_id = decision_id

On the command line: `dynamo planner decisions` prints the current decision and report as JSON;
`dynamo planner follow --prefill N --decode M -- CMD ARGS...` runs CMD for every new decision
(with DYN_DECISION_ID, DYN_NUM_PREFILL_WORKERS, DYN_NUM_DECODE_WORKERS set) and acknowledges it
when CMD exits 0. The report lives under the client's discovery lease: keep the client running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from dynamo.planner.connectors.virtual_protocol import (
    UNSET,
    Decision,
    Scaled,
    decision_key,
    first_value,
    open_discovery,
    read_decision,
    read_scaled,
    scaled_key,
)
from dynamo.runtime.config import RuntimeConfig, resolve
from dynamo.runtime.discovery.base import Discovery
from dynamo.runtime.errors import ConfigError, DynamoError


class VirtualScalerClient:
    """An external scaler's connection to the planner of Dynamo namespace `namespace`.
    `discovery`: a started client to share (else one from the `DYN_*` environment)."""

    def __init__(self, namespace: str, *, discovery: Discovery | None = None) -> None:
        self.namespace = namespace
        self._discovery = discovery
        self._owns_discovery = discovery is None
        self._scaled = Scaled(0)
        self._seen: Decision | None = None  # the decision `wait` last returned

    async def __aenter__(self) -> VirtualScalerClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect; continue from the report a previous run of this scaler left, if any."""
        store = await self._store()
        self._scaled = await read_scaled(store, self.namespace) or Scaled(0)

    async def _store(self) -> Discovery:
        if self._discovery is None:
            self._discovery = await open_discovery()
        return self._discovery

    async def get(self) -> Decision | None:
        """The planner's current decision (None: no planner has published one)."""
        return await read_decision(await self._store(), self.namespace)

    async def wait(self) -> Decision:
        """The planner's decision once it is one this client has neither completed nor
        returned before (at once when the planner has already published such a one)."""
        done, seen = self._scaled.scaled_decision_id, self._seen

        def new(value: Mapping[str, Any]) -> bool:
            # By value, not only by id: a restarted planner whose predecessor's unfinished
            # decision vanished with its lease may publish that id again.
            decision = Decision.from_value(value)
            return decision.decision_id > done and decision != seen

        value = await first_value(await self._store(), decision_key(self.namespace), new)
        self._seen = Decision.from_value(value)
        return self._seen

    async def report(self, *, prefill: int = UNSET, decode: int = UNSET) -> None:
        """Tell the planner what runs now, without acknowledging a decision."""
        await self._publish(Scaled(self._scaled.scaled_decision_id, prefill, decode))

    async def complete(
        self, decision: Decision, *, prefill: int | None = None, decode: int | None = None
    ) -> None:
        """Acknowledge `decision` as carried out. What runs now defaults to the decision's
        counts (a role it leaves unset keeps the last reported count)."""

        def now(given: int | None, decided: int, before: int) -> int:
            if given is not None:
                return given
            return decided if decided != UNSET else before

        scaled = Scaled(
            decision.decision_id,
            now(prefill, decision.num_prefill_workers, self._scaled.num_prefill_workers),
            now(decode, decision.num_decode_workers, self._scaled.num_decode_workers),
        )
        await self._publish(scaled)

    async def _publish(self, scaled: Scaled) -> None:
        store = await self._store()
        await store.put(scaled_key(self.namespace), scaled.as_value())
        self._scaled = scaled

    async def close(self) -> None:
        if self._owns_discovery and self._discovery is not None:
            discovery, self._discovery = self._discovery, None
            await discovery.close()


# --- `dynamo planner ...` -----------------------------------------------------------------


def _config(args: argparse.Namespace) -> RuntimeConfig:
    given = {"namespace": args.namespace, "discovery_backend": args.discovery_backend}
    return resolve(RuntimeConfig, given, os.environ)


async def _decisions(args: argparse.Namespace) -> int:
    config = _config(args)
    discovery = await open_discovery(config)
    try:
        decision = await read_decision(discovery, config.namespace)
        scaled = await read_scaled(discovery, config.namespace)
    finally:
        await discovery.close()
    doc = {
        "namespace": config.namespace,
        "decision": None if decision is None else decision.as_value(),
        "scaled": None if scaled is None else scaled.as_value(),
    }
    print(json.dumps(doc))
    return 0


async def _run(command: Sequence[str], decision: Decision) -> int:
    env = {
        **os.environ,
        "DYN_DECISION_ID": str(decision.decision_id),
        "DYN_NUM_PREFILL_WORKERS": str(decision.num_prefill_workers),
        "DYN_NUM_DECODE_WORKERS": str(decision.num_decode_workers),
    }
    proc = await asyncio.create_subprocess_exec(*command, env=env)
    try:
        return await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _follow(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise ConfigError("dynamo planner follow needs a command after `--`")
    config = _config(args)
    discovery = await open_discovery(config)
    try:
        async with VirtualScalerClient(config.namespace, discovery=discovery) as client:
            await client.report(prefill=args.prefill, decode=args.decode)
            print(f"following decisions in namespace {config.namespace!r}", flush=True)
            while True:
                decision = await client.wait()
                code = await _run(command, decision)
                if code == 0:
                    await client.complete(decision)
                    print(f"decision {decision.decision_id} done", flush=True)
                else:
                    print(
                        f"decision {decision.decision_id}: command exited {code}; not "
                        "acknowledged (the planner publishes it again if it still wants it)",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        await discovery.close()


def build_parser(prog: str = "dynamo planner") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Read and carry out the decisions of a planner run with "
        "--environment virtual."
    )  # fmt: skip
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--namespace", help="Dynamo namespace [env DYN_NAMESPACE]")
    common.add_argument(
        "--discovery-backend",
        choices=("file", "etcd", "kubernetes"),
        help="where the planner publishes [env DYN_DISCOVERY_BACKEND; default file; etcd "
        "reads ETCD_ENDPOINTS, file reads DYN_FILE_KV]",
    )
    sub.add_parser(
        "decisions", parents=[common], help="print the current decision and report as JSON"
    )
    follow = sub.add_parser(
        "follow",
        parents=[common],
        help="run a command for every new decision and acknowledge it when it exits 0",
    )
    follow.add_argument("--prefill", type=int, default=UNSET, help="prefill workers running now")
    follow.add_argument("--decode", type=int, default=UNSET, help="decode workers running now")
    follow.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "dynamo planner") -> int:
    args = build_parser(prog).parse_args(argv)
    action = _decisions if args.action == "decisions" else _follow
    try:
        return asyncio.run(action(args))
    except KeyboardInterrupt:
        return 130
    except DynamoError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
