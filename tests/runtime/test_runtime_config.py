"""Configuration precedence (flag > env > default), bad values, and endpoint addresses."""

from __future__ import annotations

import argparse

import pytest

from dynamo.runtime.addressing import EndpointAddress, new_instance_id
from dynamo.runtime.config import RuntimeConfig, add_arguments, default_file_kv_root, resolve
from dynamo.runtime.errors import ConfigError


def parse(argv: list[str], env: dict[str, str]) -> RuntimeConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser, RuntimeConfig)
    return resolve(RuntimeConfig, parser.parse_args(argv), env)


def test_defaults() -> None:
    config = parse([], {})
    assert config.namespace == "dynamo"
    assert config.discovery_backend == "file"
    assert (config.request_plane, config.event_plane) == ("tcp", "zmq")
    assert config.etcd_endpoints == "http://localhost:2379"
    assert config.nats_server == "nats://localhost:4222"
    assert config.file_kv_root == default_file_kv_root()
    assert config.lease_ttl_s == 10.0 and config.system_port is None


def test_env_beats_default_and_flag_beats_env() -> None:
    env = {
        "DYN_DISCOVERY_BACKEND": "etcd",
        "ETCD_ENDPOINTS": "http://10.0.0.1:2379",
        "NATS_SERVER": "nats://n:4222",
        "DYN_FILE_KV": "/tmp/kv",
        "DYN_SYSTEM_PORT": "9090",
        "DYN_NAMESPACE": "from-env",
    }
    config = parse([], env)
    assert (config.discovery_backend, config.etcd_endpoints) == ("etcd", "http://10.0.0.1:2379")
    assert (config.nats_server, config.file_kv_root) == ("nats://n:4222", "/tmp/kv")
    assert (config.system_port, config.namespace) == (9090, "from-env")
    config = parse(["--discovery-backend", "mem", "--namespace", "from-flag"], env)
    assert (config.discovery_backend, config.namespace) == ("mem", "from-flag")


def test_bad_choice_in_env_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"DYN_REQUEST_PLANE: 'http' is not one of"):
        parse([], {"DYN_REQUEST_PLANE": "http"})
    with pytest.raises(ConfigError, match=r"DYN_SYSTEM_PORT='x': expected int"):
        parse([], {"DYN_SYSTEM_PORT": "x"})


def test_bad_choice_flag_is_rejected_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--event-plane", "kafka"], {})
    assert "invalid choice: 'kafka'" in capsys.readouterr().err


def test_endpoint_address_round_trip() -> None:
    address = EndpointAddress.parse("dyn://ns.backend.generate")
    assert address == EndpointAddress("ns", "backend", "generate")
    assert str(address) == "dyn://ns.backend.generate"
    assert address.path == "ns/backend/generate"
    assert EndpointAddress.parse("ns.prefill.generate").component == "prefill"


@pytest.mark.parametrize(
    "text", ["dyn://ns.backend", "dyn://a.b.c.d", "dyn://ns..generate", "dyn://n s.b.g", ""]
)
def test_endpoint_address_parse_errors(text: str) -> None:
    with pytest.raises(ConfigError, match=r"expected dyn://namespace\.component\.endpoint"):
        EndpointAddress.parse(text)


def test_instance_ids_are_positive_and_distinct() -> None:
    ids = {new_instance_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(0 < i < 2**63 for i in ids)
