"""`python -m dynamo.frontend`: one parser over runtime, router and frontend flags and env."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dynamo.frontend.main import main, parse_configs, policy_factory
from dynamo.protocols.model_card import ModelCard
from dynamo.router.active_sequences import ActiveSequenceEvent
from dynamo.router.base import WorkerInfo
from dynamo.router.config import RouterConfig
from dynamo.router.kv_policy import KvPolicy
from dynamo.router.replica_sync import ReplicaSync


def test_flags_beat_env_beat_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYN_HTTP_PORT", "9001")
    monkeypatch.setenv("DYN_ROUTER_MODE", "random")
    monkeypatch.setenv("DYN_HTTP_OVERLOAD_STATUS_CODE", "529")
    runtime, frontend, router, level = parse_configs(["--migration-limit", "3", "--namespace", "x"])
    assert frontend.http_port == 9001 and frontend.http_host == "0.0.0.0"
    assert frontend.migration_limit == 3 and frontend.overload_status_code == 529
    assert router.router_mode == "random" and runtime.namespace == "x"
    assert level == "info"
    _, frontend, router, _ = parse_configs(["--http-port", "8123", "--router-mode", "kv"])
    assert frontend.http_port == 8123 and router.router_mode == "kv"


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DYN_NAMESPACE", raising=False)
    runtime, frontend, router, _ = parse_configs([])
    assert runtime.namespace == "dynamo"
    assert (frontend.http_port, frontend.migration_limit, frontend.overload_status_code) == (
        8000,
        0,
        503,
    )
    assert frontend.metrics_prefix == "dynamo_frontend"
    assert router.router_mode == "round-robin"


def test_bad_values_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--http-port", "70000"]) == 2
    assert "--http-port" in capsys.readouterr().err
    assert main(["--tls-cert-path", "x"]) == 2


def test_help_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dynamo.frontend", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    for flag in (
        "--http-port",
        "--router-mode",
        "--migration-limit",
        "--discovery-backend",
        "--active-decode-blocks-threshold",
        "--kv-cache-block-size",
        "--namespace",
    ):
        assert flag in out


def test_replica_sync_attaches_every_kv_policy_and_nothing_else() -> None:
    card = ModelCard(name="m")
    sync = ReplicaSync("ns.frontend.active_sequences_events")
    kv = policy_factory(RouterConfig(router_mode="kv", router_replica_sync=True), sync)(card)
    rr = policy_factory(RouterConfig(router_mode="round-robin"), sync)(card)
    assert isinstance(kv, KvPolicy) and not isinstance(rr, KvPolicy)
    kv.add_worker(WorkerInfo(instance_id=7, kv_block_size=4))
    # a change booked by another frontend replica shows up in this replica's load view
    sync.apply(
        ActiveSequenceEvent(
            request_id="r",
            worker_id=7,
            dp_rank=0,
            kind="add",
            seq_hashes=(1, 2),
            isl=8,
            overlap_blocks=0,
            router_id="other-replica",
        ).to_wire()
    )
    assert sync.stats.applied == 1
    (load,) = kv.potential_loads([1, 2, 3, 4])
    assert load.active_prefill_tokens == 8


def test_hostile_client_limits_from_flags_and_env(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, frontend, _, _ = parse_configs([])
    assert (
        frontend.http_keepalive_timeout_s,
        frontend.http_body_timeout_s,
        frontend.http_write_timeout_s,
    ) == (75.0, 60.0, 60.0)
    monkeypatch.setenv("DYN_HTTP_WRITE_TIMEOUT_S", "5")
    _, frontend, _, _ = parse_configs(["--http-keepalive-timeout-s", "2.5"])
    assert frontend.http_keepalive_timeout_s == 2.5 and frontend.http_write_timeout_s == 5.0
    assert main(["--http-body-timeout-s", "0"]) == 2
    assert "--http-body-timeout-s 0.0: expected > 0 seconds" in capsys.readouterr().err
    assert parse_configs(["--http-max-connections", "100"])[1].http_max_connections == 100
    assert main(["--http-max-connections", "-1"]) == 2
    assert main(["--max-request-body-bytes", "0"]) == 2
    assert "--max-request-body-bytes must be >= 1" in capsys.readouterr().err.splitlines()[-1]
