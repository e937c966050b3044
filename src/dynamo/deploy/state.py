"""The run directory of one `dynamo serve`: where its state file, control socket and file
discovery live, so that `dynamo ps` and `dynamo scale` can find a running graph.

Layout of `{root}/{graph name}/`: `state.json`, `control.sock`, `kv/` (DYN_FILE_KV), `bin/`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dynamo.runtime.errors import ConfigError

STATE_FILE = "state.json"
CONTROL_SOCKET = "control.sock"
ROOT_ENV = "DYN_SERVE_RUN_ROOT"
CONTROL_ENV = "DYN_SERVE_CONTROL"  # given to children: the planner scales through it


def runs_root() -> Path:
    """`$DYN_SERVE_RUN_ROOT`, else `{tmp}/dynamo-serve-{uid}`."""
    root = os.environ.get(ROOT_ENV)
    return Path(root) if root else Path(tempfile.gettempdir()) / f"dynamo-serve-{os.getuid()}"


def run_dir_for(graph_name: str, root: Path | None = None) -> Path:
    return (root or runs_root()) / graph_name


@dataclass
class ReplicaState:
    index: int
    pid: int | None = None
    state: str = "starting"  # starting | running | backoff | stopping | stopped
    restarts: int = 0
    started_at: float | None = None
    last_exit_code: int | None = None


@dataclass
class ServiceState:
    name: str
    component_type: str
    desired: int
    replicas: list[ReplicaState] = field(default_factory=list)
    sub_component_type: str | None = None  # prefill | decode: how the planner finds its roles


@dataclass
class RunState:
    graph: str
    runner_pid: int
    started_at: float
    dynamo_namespace: str
    http_port: int
    file_kv_root: str
    state: str = "running"  # running | stopping | stopped
    services: list[ServiceState] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunState:
        services = [
            ServiceState(**{**s, "replicas": [ReplicaState(**r) for r in s.get("replicas", [])]})
            for s in data.get("services", [])
        ]
        return cls(**{**data, "services": services})


def write_state(run_dir: Path, state: RunState) -> None:
    """Replace the state file atomically (readers never see half a file)."""
    tmp = run_dir / f".{STATE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(state.to_json(), indent=1))
    tmp.replace(run_dir / STATE_FILE)


def read_state(run_dir: Path) -> RunState:
    path = run_dir / STATE_FILE
    try:
        return RunState.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ConfigError(f"no dynamo serve state in {run_dir}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: unreadable state file: {exc}") from exc


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_runs(root: Path | None = None) -> list[tuple[Path, RunState]]:
    """Run dirs under `root` whose runner process is alive."""
    base = root or runs_root()
    found = []
    for state_file in sorted(base.glob(f"*/{STATE_FILE}")):
        try:
            state = read_state(state_file.parent)
        except ConfigError:
            continue
        if state.state != "stopped" and pid_alive(state.runner_pid):
            found.append((state_file.parent, state))
    return found


def find_run(graph: str | None = None, run_dir: Path | None = None) -> Path:
    """The run dir named by `run_dir`, or by graph name, or the only live run."""
    if run_dir is not None:
        return run_dir
    if graph is not None:
        return run_dir_for(graph)
    runs = live_runs()
    if not runs:
        raise ConfigError(f"no running `dynamo serve` found under {runs_root()}")
    if len(runs) > 1:
        names = ", ".join(s.graph for _, s in runs)
        raise ConfigError(f"several graphs are running ({names}); name one")
    return runs[0][0]
