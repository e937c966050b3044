"""The `virtual` connector and its external side, over the embedded file store and a real
etcd: publish, wait for the acknowledgement, skip repeats, time out, restart, and the
`dynamo planner` command line."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from dynamo.planner.connectors import ConnectorSettings, Role, make_connector
from dynamo.planner.connectors.virtual import ScalerTimeoutError, VirtualScaling
from dynamo.planner.connectors.virtual_client import VirtualScalerClient
from dynamo.planner.connectors.virtual_protocol import Decision, decision_key
from dynamo.runtime.discovery.base import Discovery
from dynamo.runtime.discovery.etcd import EtcdDiscovery
from dynamo.runtime.discovery.file import FileDiscovery
from dynamo.runtime.errors import ConfigError, UnavailableError
from dynamo.testing.processes import Procs, read_until

# Hang guards for event-driven waits, not performance assertions.
ACK_LIMIT_S = 30.0
SHORT_ACK_S = 0.5


OpenStore = Callable[[], Awaitable[Discovery]]


@pytest.fixture(params=["file", "etcd"])
async def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens started clients of one store (the embedded file store, or a real etcd), each
    with its own lease, as separate processes would; all closed at the end."""
    opened: list[Discovery] = []
    url = request.getfixturevalue("etcd_server").url if request.param == "etcd" else None

    async def open_store() -> Discovery:
        store: Discovery
        if url is not None:
            store = EtcdDiscovery(url, ttl_s=5)
        else:
            store = FileDiscovery(tmp_path / "kv", ttl_s=5)
        await store.start()
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        await store.close()


def _settings(namespace: str, roles: tuple[Role, ...] = ("prefill", "decode")) -> ConnectorSettings:
    return ConnectorSettings(environment="virtual", namespace=namespace, roles=roles)


async def _scaler_loop(client: VirtualScalerClient, seen: list[Decision]) -> None:
    """An external system that carries out every decision at once."""
    while True:
        decision = await client.wait()
        seen.append(decision)
        await client.complete(decision)


async def test_a_decision_is_published_carried_out_and_acknowledged(
    store_factory: OpenStore,
) -> None:
    planner_store, scaler_store = await store_factory(), await store_factory()
    planner = VirtualScaling(_settings("ns1"), discovery=planner_store, ack_timeout_s=ACK_LIMIT_S)
    seen: list[Decision] = []
    async with VirtualScalerClient("ns1", discovery=scaler_store) as client:
        await client.report(prefill=1, decode=1)
        assert await planner.live_replicas() == {"prefill": 1, "decode": 1}
        loop = asyncio.create_task(_scaler_loop(client, seen))
        try:
            await planner.scale({"prefill": 2, "decode": 3}, "burst")
            assert seen == [Decision(1, 2, 3, "burst")]
            assert await planner.live_replicas() == {"prefill": 2, "decode": 3}
            await planner.scale({"prefill": 1, "decode": 1}, "idle")
            assert seen[-1] == Decision(2, 1, 1, "idle")
            assert await planner.live_replicas() == {"prefill": 1, "decode": 1}
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
    await planner.close()


async def test_a_decision_equal_to_the_last_acknowledged_one_is_not_published_again(
    store_factory: OpenStore,
) -> None:
    planner_store, scaler_store = await store_factory(), await store_factory()
    planner = VirtualScaling(_settings("ns2"), discovery=planner_store, ack_timeout_s=ACK_LIMIT_S)
    seen: list[Decision] = []
    async with VirtualScalerClient("ns2", discovery=scaler_store) as client:
        loop = asyncio.create_task(_scaler_loop(client, seen))
        try:
            await planner.scale({"prefill": 1, "decode": 2}, "first")
            await planner.scale({"prefill": 1, "decode": 2}, "same again")
            await planner.scale({"prefill": 1, "decode": 3}, "changed")
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
    assert [(d.decision_id, d.reason) for d in seen] == [(1, "first"), (2, "changed")]


async def test_an_unacknowledged_decision_is_published_again_as_a_new_one(
    store_factory: OpenStore,
) -> None:
    planner_store, scaler_store = await store_factory(), await store_factory()
    planner = VirtualScaling(_settings("ns9"), discovery=planner_store, ack_timeout_s=SHORT_ACK_S)
    with pytest.raises(ScalerTimeoutError):
        await planner.scale({"prefill": 1, "decode": 2}, "first")
    with pytest.raises(ScalerTimeoutError):
        await planner.scale({"prefill": 1, "decode": 2}, "again")
    client = VirtualScalerClient("ns9", discovery=scaler_store)
    assert await client.get() == Decision(2, 1, 2, "again")


async def test_no_acknowledgement_times_out_and_the_decision_stays(
    store_factory: OpenStore,
) -> None:
    planner_store, scaler_store = await store_factory(), await store_factory()
    planner = VirtualScaling(_settings("ns3"), discovery=planner_store, ack_timeout_s=SHORT_ACK_S)
    with pytest.raises(ScalerTimeoutError) as err:
        await planner.scale({"prefill": 2, "decode": 2}, "nobody listens")
    assert str(err.value) == (
        "the external scaler did not acknowledge decision 1 within 0.5 s (namespace 'ns3')"
    )
    async with VirtualScalerClient("ns3", discovery=scaler_store) as client:
        decision = await asyncio.wait_for(client.wait(), ACK_LIMIT_S)
    assert decision == Decision(1, 2, 2, "nobody listens")


async def test_live_replicas_need_a_running_scaler(store_factory: OpenStore) -> None:
    planner_store, scaler_store = await store_factory(), await store_factory()
    planner = VirtualScaling(_settings("ns4"), discovery=planner_store)
    with pytest.raises(UnavailableError) as err:
        await planner.live_replicas()
    assert str(err.value).startswith(
        "no external scaler has reported its prefill workers in namespace 'ns4'"
    )
    client = VirtualScalerClient("ns4", discovery=scaler_store)
    await client.report(prefill=2, decode=5)
    assert await planner.live_replicas() == {"prefill": 2, "decode": 5}
    await scaler_store.close()  # the scaler exits: its report goes with its lease

    async def gone() -> bool:
        try:
            await planner.live_replicas()
        except Exception as exc:
            return type(exc).__name__ == "UnavailableError"
        return False

    for _ in range(int(ACK_LIMIT_S / 0.1)):
        if await gone():
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the scaler's report outlived it")


async def test_an_aggregated_planner_leaves_prefill_unset(store_factory: OpenStore) -> None:
    planner_store, scaler_store = await store_factory(), await store_factory()
    planner = VirtualScaling(
        _settings("ns5", roles=("decode",)), discovery=planner_store, ack_timeout_s=ACK_LIMIT_S
    )
    seen: list[Decision] = []
    async with VirtualScalerClient("ns5", discovery=scaler_store) as client:
        await client.report(decode=1)
        loop = asyncio.create_task(_scaler_loop(client, seen))
        try:
            await planner.scale({"decode": 4}, "agg")
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
    assert seen == [Decision(1, -1, 4, "agg")]
    assert await planner.live_replicas() == {"decode": 4}


async def test_a_restarted_planner_continues_after_the_last_acknowledged_decision(
    store_factory: OpenStore,
) -> None:
    scaler_store = await store_factory()
    seen: list[Decision] = []
    async with VirtualScalerClient("ns6", discovery=scaler_store) as client:
        loop = asyncio.create_task(_scaler_loop(client, seen))
        try:
            for _ in range(2):  # two planner lives, each with its own lease
                store = await store_factory()
                planner = VirtualScaling(_settings("ns6"), discovery=store, ack_timeout_s=30)
                await planner.scale({"prefill": 1, "decode": len(seen) + 2}, "life")
                await store.close()
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
    assert [d.decision_id for d in seen] == [1, 2]


async def test_bad_targets_are_config_errors(store_factory: OpenStore) -> None:
    planner = VirtualScaling(_settings("ns7", roles=("decode",)), discovery=await store_factory())
    with pytest.raises(ConfigError, match="this planner does not scale the prefill role"):
        await planner.scale({"prefill": 1, "decode": 1}, "x")
    with pytest.raises(ConfigError, match=r"decode: replicas must be >= 0, got -2"):
        await planner.scale({"decode": -2}, "x")


def test_make_connector_builds_the_virtual_connector() -> None:
    assert isinstance(make_connector(_settings("x")), VirtualScaling)


async def test_the_default_store_comes_from_the_environment() -> None:
    # conftest points DYN_FILE_KV at this test's own directory: the embedded file store.
    planner = VirtualScaling(_settings("ns8"), ack_timeout_s=SHORT_ACK_S)
    with pytest.raises(ScalerTimeoutError):
        await planner.scale({"prefill": 1, "decode": 1}, "default store")
    root = FileDiscovery(os.environ["DYN_FILE_KV"])
    assert set(await root.get_prefix("v1/planner/")) == {decision_key("ns8")}
    await planner.close()


async def test_the_follow_command_carries_out_and_acknowledges_decisions(
    procs: Procs, tmp_path: Path
) -> None:
    out = tmp_path / "scaled.txt"
    names = ("DYN_DECISION_ID", "DYN_NUM_PREFILL_WORKERS", "DYN_NUM_DECODE_WORKERS")
    script = (
        f"import os; line = ' '.join(os.environ[n] for n in {names!r}); "
        f"open({str(out)!r}, 'a').write(line + '\\n')"
    )
    follow = await procs.spawn(
        "dynamo.cli", "planner", "follow", "--namespace", "cli", "--prefill", "1",
        "--decode", "1", "--", sys.executable, "-c", script,
    )  # fmt: skip
    await read_until(follow, re.compile(rb"(following) decisions"), ACK_LIMIT_S)
    planner = VirtualScaling(_settings("cli"), ack_timeout_s=ACK_LIMIT_S)
    try:
        assert await planner.live_replicas() == {"prefill": 1, "decode": 1}
        await planner.scale({"prefill": 2, "decode": 3}, "cli")
        assert out.read_text() == "1 2 3\n"
        assert await planner.live_replicas() == {"prefill": 2, "decode": 3}

        shown = await procs.spawn("dynamo.cli", "planner", "decisions", "--namespace", "cli")
        stdout, _ = await asyncio.wait_for(shown.communicate(), ACK_LIMIT_S)
        assert shown.returncode == 0
        assert json.loads(stdout) == {
            "namespace": "cli",
            "decision": {
                "decision_id": 1,
                "num_prefill_workers": 2,
                "num_decode_workers": 3,
                "reason": "cli",
            },
            "scaled": {"scaled_decision_id": 1, "num_prefill_workers": 2, "num_decode_workers": 3},
        }
    finally:
        await planner.close()


async def test_a_failing_command_is_not_acknowledged_and_runs_again_on_the_next_decision(
    procs: Procs, tmp_path: Path
) -> None:
    marker = tmp_path / "failed-once"
    # Fails the first time (leaving a marker), succeeds the next.
    script = (
        f"import pathlib, sys; m = pathlib.Path({str(marker)!r}); "
        "sys.exit(0) if m.exists() else (m.touch(), sys.exit(3))"
    )
    follow = await procs.spawn(
        "dynamo.cli", "planner", "follow", "--namespace", "bad", "--decode", "1",
        "--", sys.executable, "-c", script,
    )  # fmt: skip
    await read_until(follow, re.compile(rb"(following) decisions"), ACK_LIMIT_S)
    planner = VirtualScaling(_settings("bad", roles=("decode",)), ack_timeout_s=2.0)
    try:
        with pytest.raises(ScalerTimeoutError):
            await planner.scale({"decode": 2}, "will fail")
        line = await read_until(follow, re.compile(rb"(decision 1: command exited 3)"), 30)
        assert line == b"decision 1: command exited 3"
        assert await planner.live_replicas() == {"decode": 1}
    finally:
        await planner.close()
    # A restarted, more patient planner still wants 2: decision 2, and the command succeeds.
    patient = VirtualScaling(_settings("bad", roles=("decode",)), ack_timeout_s=ACK_LIMIT_S)
    try:
        await patient.scale({"decode": 2}, "try again")
        assert await patient.live_replicas() == {"decode": 2}
    finally:
        await patient.close()


async def test_follow_without_a_command_says_so(procs: Procs) -> None:
    proc = await procs.spawn("dynamo.cli", "planner", "follow", "--namespace", "x")
    stdout, _ = await asyncio.wait_for(proc.communicate(), ACK_LIMIT_S)
    assert proc.returncode == 1
    assert stdout.decode() == "dynamo planner: dynamo planner follow needs a command after `--`\n"
