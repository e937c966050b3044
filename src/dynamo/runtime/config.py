"""Configuration from one definition: flags beat `DYN_*` env vars beat the dataclass default.

A component declares a frozen dataclass whose fields use `option(...)`; `add_arguments`
derives the argparse flags and `resolve` builds the instance, so no default is written twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from dynamo.runtime.errors import ConfigError

T = TypeVar("T")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    aliases: Sequence[str] = (),
    env: str | None = None,
    choices: Sequence[Any] | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """Declare a config field. `flag` defaults to `--field-name`, `env` to `DYN_FIELD_NAME`."""
    meta = {"help": help, "flag": flag, "aliases": tuple(aliases), "env": env, "choices": choices}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _flag(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def env_name(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("env") or "DYN_" + f.name.upper()


def _base_type(tp: Any) -> tuple[type, bool]:
    """(scalar type, optional?) for `int`, `int | None`, `Optional[int]`, `list[str]`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])[0], True
    if origin in (list, tuple):
        return list, False
    return tp, False


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, title: str | None = None) -> None:
    """Add one flag per field of the config dataclass `cls` (defaults resolved later)."""
    group = parser.add_argument_group(title or cls.__name__)
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            continue
        tp, _ = _base_type(hints[f.name])
        default = _default_of(f)
        shown = f"{f.metadata['help']} [env {env_name(f)}; default {default!r}]"
        names = [_flag(f), *f.metadata["aliases"]]
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": shown}
        if tp is bool:
            group.add_argument(*names, action=argparse.BooleanOptionalAction, **kwargs)
        elif tp is list:
            group.add_argument(*names, nargs="*", **kwargs)
        else:
            group.add_argument(*names, type=tp, choices=f.metadata["choices"], **kwargs)


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _from_env(raw: str, tp: type, name: str) -> Any:
    if tp is bool:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"{name}={raw!r}: expected true/false")
    if tp is list:
        return [p for p in raw.replace(",", " ").split() if p]
    try:
        return tp(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}={raw!r}: expected {tp.__name__}") from exc


def resolve(
    cls: type[T],
    args: argparse.Namespace | Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> T:
    """Build `cls` from parsed flags, then env vars, then defaults."""
    given = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    env = os.environ if environ is None else environ
    hints = _field_types(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        tp, _ = _base_type(hints[f.name])
        if given.get(f.name) is not None:
            values[f.name] = given[f.name]
        elif "help" in f.metadata and env_name(f) in env:
            values[f.name] = _from_env(env[env_name(f)], tp, env_name(f))
        else:
            continue  # dataclass default
        choices = f.metadata.get("choices")
        if choices is not None and values[f.name] not in choices:
            raise ConfigError(
                f"{_flag(f)} / {env_name(f)}: {values[f.name]!r} is not one of {list(choices)}"
            )
    return cls(**values)


def parse(cls: type[T], argv: Sequence[str] | None = None, *, prog: str | None = None) -> T:
    parser = argparse.ArgumentParser(prog=prog)
    add_arguments(parser, cls)
    return resolve(cls, parser.parse_args(argv))


def default_file_kv_root() -> str:
    return os.path.join(tempfile.gettempdir(), f"dynamo_store_kv-{os.getuid()}")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """How a process finds its peers and talks to them; shared by every component."""

    namespace: str = option("dynamo", help="Dynamo namespace that isolates one deployment")
    discovery_backend: str = option(
        "file", help="where instances register", choices=("mem", "file", "etcd", "kubernetes")
    )
    request_plane: str = option("tcp", help="request transport", choices=("tcp", "nats"))
    event_plane: str = option("zmq", help="KV event / metrics transport", choices=("zmq", "nats"))
    etcd_endpoints: str = option(
        "http://localhost:2379", help="etcd client URLs, comma separated", env="ETCD_ENDPOINTS"
    )
    nats_server: str = option("nats://localhost:4222", help="NATS server URL", env="NATS_SERVER")
    file_kv_root: str = option(
        default_factory=default_file_kv_root,
        help="root directory of file discovery",
        env="DYN_FILE_KV",
    )
    lease_ttl_s: float = option(10.0, help="discovery lease TTL in seconds")
    kube_discovery_liveness: str = option(
        "heartbeat",
        help="Kubernetes discovery: how readers tell a process lives; readiness = its pod is "
        "Ready in the graph's discovery Service (the operator sets it; needs POD_NAME and that "
        "Service), heartbeat = an annotation renewed every TTL/3 (works anywhere)",
        choices=("heartbeat", "readiness"),
    )
    tcp_host: str = option(
        "127.0.0.1",
        help="host the request-plane server binds and advertises",
        env="DYN_TCP_RPC_HOST",
    )
    tcp_port: int = option(0, help="request-plane port (0 = any free port)", env="DYN_TCP_RPC_PORT")
    peer_keepalive_s: int = option(
        1,
        help="hold an idle request-plane connection with this TCP keepalive (whole seconds) "
        "to every instance a caller routes to; a broken one takes the instance out of routing "
        "at once (0 = off: only discovery removes dead instances)",
    )
    peer_reconnect_max_s: float = option(
        5.0, help="longest pause between reconnect probes to an instance marked down"
    )
    system_port: int | None = option(
        None, help="port of the /health /live /metrics status server (off when unset)"
    )
    engine_health_interval_s: float = option(
        2.0,
        help="seconds between checks of the engine's health; a failed check makes /health "
        "answer 503 and the worker deregister and exit 1 (0: checked only by /health)",
    )
    graceful_shutdown_grace_period_s: float = option(
        5.0,
        help="seconds to wait for in-flight requests on SIGTERM",
        env="DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS",
    )
