"""The local runner: keeps every service x replica of a graph running as child processes.

A crashed replica restarts with exponential backoff; `set_replicas` scales a service while
running; `shutdown` drains (SIGTERM, grace period, SIGKILL). State goes to the run dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dynamo.deploy.builder import ServiceSpec
from dynamo.deploy.connector import start_control_server
from dynamo.deploy.logs import LogPrinter, pump_lines, replica_label
from dynamo.deploy.process import (
    child_env,
    guarded,
    local_argv,
    signal_group,
    spawn,
    stop_process,
)
from dynamo.deploy.state import (
    CONTROL_SOCKET,
    ReplicaState,
    RunState,
    ServiceState,
    write_state,
)
from dynamo.runtime.errors import ConfigError
from dynamo.runtime.tasks import wait_event

LOG_DRAIN_S = 2.0  # how long to wait for a dead child's last output lines


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff after a replica exits: initial x 2^(failures-1), capped; reset once stable."""

    initial_s: float = 1.0
    max_s: float = 30.0
    stable_after_s: float = 10.0

    def delay(self, failures: int) -> float:
        return float(min(self.initial_s * 2 ** max(failures - 1, 0), self.max_s))


class _Replica:
    def __init__(self, index: int) -> None:
        self.state = ReplicaState(index=index)
        self.stop = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None


class _Service:
    def __init__(
        self, spec: ServiceSpec, argv: tuple[str, ...], cwd: str | None, python: str
    ) -> None:
        self.spec = spec
        self.argv = argv
        self.launch = guarded(argv, python)
        self.cwd = cwd
        self.desired = spec.replicas
        self.replicas: list[_Replica] = []


class Supervisor:
    """Runs the processes of one graph; implements `ReplicaController` for connectors."""

    def __init__(
        self,
        specs: list[ServiceSpec],
        *,
        graph: str,
        run_dir: Path,
        env: Mapping[str, str],
        extra_env: Mapping[str, str] | None = None,
        printer: LogPrinter,
        grace_period_s: float = 10.0,
        restart: RestartPolicy | None = None,
        http_port: int = 8000,
        python: str = sys.executable,
    ) -> None:
        self.graph = graph
        self.run_dir = run_dir
        self.env = dict(env)
        self.extra_env = dict(extra_env or {})
        self.printer = printer
        self.grace_period_s = grace_period_s
        self.restart = restart or RestartPolicy()
        self.services: dict[str, _Service] = {}
        for spec in specs:
            cwd = spec.working_dir if spec.working_dir and os.path.isdir(spec.working_dir) else None
            self.services[spec.name] = _Service(spec, local_argv(spec, python), cwd, python)
        self._state = RunState(
            graph=graph,
            runner_pid=os.getpid(),
            started_at=time.time(),
            dynamo_namespace=specs[0].dynamo_namespace if specs else "",
            http_port=http_port,
            file_kv_root=self.extra_env.get("DYN_FILE_KV", self.env.get("DYN_FILE_KV", "")),
        )
        self._server: asyncio.Server | None = None
        self._last_summary = ""
        self._stopping = False
        self._lock = asyncio.Lock()

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Start the control socket and every replica."""
        self._server = await start_control_server(self.run_dir / CONTROL_SOCKET, self)
        async with self._lock:
            for service in self.services.values():
                self._resize(service, service.desired)
        self._changed()

    async def shutdown(self) -> None:
        """Stop every replica (SIGTERM, grace period, SIGKILL) and the control socket."""
        self._stopping = True
        self._state.state = "stopping"
        self._changed()
        if self._server is not None:
            self._server.close()
        tasks = []
        for service in self.services.values():
            for replica in service.replicas:
                replica.stop.set()
                if replica.task is not None:
                    tasks.append(replica.task)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        (self.run_dir / CONTROL_SOCKET).unlink(missing_ok=True)
        self._state.state = "stopped"
        self._changed()

    def kill_all(self) -> None:
        """SIGKILL every child now (a second Ctrl-C)."""
        for service in self.services.values():
            for replica in service.replicas:
                if replica.proc is not None and replica.proc.returncode is None:
                    signal_group(replica.proc.pid, signal.SIGKILL)

    # --- ReplicaController --------------------------------------------------------------
    async def set_replicas(self, service: str, replicas: int) -> None:
        if service not in self.services:
            raise ConfigError(f"no service {service!r}; services: {', '.join(self.services)}")
        if replicas < 0:
            raise ConfigError(f"replicas must be >= 0, got {replicas}")
        if self._stopping:
            raise ConfigError("the graph is shutting down")
        async with self._lock:
            svc = self.services[service]
            if replicas != svc.desired:
                self.printer.runner(f"scaling {service} from {svc.desired} to {replicas}")
            svc.desired = replicas
            removed = self._resize(svc, replicas)
            self._changed()
        await asyncio.gather(*(r.task for r in removed if r.task is not None))
        self._changed()

    def replica_counts(self) -> dict[str, int]:
        return {name: svc.desired for name, svc in self.services.items()}

    def status(self) -> dict[str, Any]:
        return self.snapshot().to_json()

    def snapshot(self) -> RunState:
        self._state.services = [
            ServiceState(
                name=name,
                component_type=svc.spec.component_type,
                desired=svc.desired,
                replicas=[ReplicaState(**asdict(r.state)) for r in svc.replicas],
                sub_component_type=svc.spec.sub_component_type,
            )
            for name, svc in self.services.items()
        ]
        return self._state

    # --- internals ----------------------------------------------------------------------
    def _resize(self, svc: _Service, count: int) -> list[_Replica]:
        """Start replicas up to `count`; signal the ones above it to stop (returned)."""
        while len(svc.replicas) < count:
            replica = _Replica(len(svc.replicas))
            replica.task = asyncio.create_task(self._keep_running(svc, replica))
            svc.replicas.append(replica)
        removed = svc.replicas[count:]
        del svc.replicas[count:]
        for replica in removed:
            replica.stop.set()
        return removed

    def _changed(self) -> None:
        with contextlib.suppress(OSError):
            write_state(self.run_dir, self.snapshot())
        parts = []
        for name, svc in self.services.items():
            running = sum(r.state.state == "running" for r in svc.replicas)
            parts.append(f"{name} {running}/{svc.desired}")
        summary = "status: " + ", ".join(parts)
        if self._state.state == "running" and summary != self._last_summary:
            self._last_summary = summary
            self.printer.runner(summary)

    async def _keep_running(self, svc: _Service, replica: _Replica) -> None:
        label = replica_label(svc.spec.name, replica.state.index)
        failures = 0
        while not replica.stop.is_set():
            started = time.monotonic()
            code = await self._run_once(svc, replica, label)
            replica.state.last_exit_code = code
            if replica.stop.is_set():
                break
            ran_s = time.monotonic() - started
            failures = 1 if ran_s >= self.restart.stable_after_s else failures + 1
            delay = self.restart.delay(failures)
            replica.state.restarts += 1
            replica.state.state = "backoff"
            self.printer.runner(
                f"{label} exited with code {code}; restart {replica.state.restarts} in {delay:g}s"
            )
            self._changed()
            await wait_event(replica.stop, delay)
        replica.state.state = "stopped"

    async def _run_once(self, svc: _Service, replica: _Replica, label: str) -> int:
        replica.state.state = "starting"
        env = child_env(self.env, svc.spec.env, self.extra_env)
        try:
            proc = await spawn(svc.launch, env=env, cwd=svc.cwd)
        except OSError as exc:
            self.printer.runner(f"{label} cannot start {svc.argv[0]!r}: {exc.strerror or exc}")
            return 127
        replica.proc = proc
        replica.state.pid = proc.pid
        replica.state.state = "running"
        replica.state.started_at = time.time()
        self._changed()
        pump = None
        if proc.stdout is not None:
            pump = asyncio.create_task(pump_lines(proc.stdout, self.printer, label, svc.spec.name))
        exited = asyncio.create_task(proc.wait())
        stop = asyncio.create_task(replica.stop.wait())
        await asyncio.wait({exited, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not exited.done():
            replica.state.state = "stopping"
            self._changed()
        code = await stop_process(proc, self.grace_period_s)  # also reaps its leftover helpers
        await exited
        if pump is not None:
            try:
                await asyncio.wait_for(pump, LOG_DRAIN_S)
            except TimeoutError:
                pump.cancel()
        replica.proc = None
        replica.state.pid = None
        return code
