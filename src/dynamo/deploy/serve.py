"""`dynamo serve`: run a DynamoGraphDeployment on this machine; plus `dynamo ps` / `dynamo scale`.

Loads the graph, builds it in `local` mode, prepares the run dir (fresh file-discovery root,
`python3` shims, state file, control socket) and supervises the children until a signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from dynamo.deploy.builder import ServiceSpec, build_graph, detect_backend
from dynamo.deploy.configmaps import mount_locally, read_configmaps, write_configmaps
from dynamo.deploy.graph import DynamoGraphDeployment, load_graph
from dynamo.deploy.logs import LogPrinter
from dynamo.deploy.process import env_diff, local_argv, write_python_shims
from dynamo.deploy.runner import RestartPolicy, Supervisor
from dynamo.deploy.state import (
    CONTROL_ENV,
    CONTROL_SOCKET,
    RunState,
    pid_alive,
    read_state,
    run_dir_for,
)
from dynamo.runtime.config import option
from dynamo.runtime.errors import ConfigError, MissingExtraError


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Options of `dynamo serve`."""

    file: str | None = option(
        None,
        help="graph manifest (DynamoGraphDeployment YAML)",
        flag="--file",
        aliases=("-f",),
        env="DYN_SERVE_FILE",
    )
    http_port: int = option(8000, help="HTTP port of the frontend", env="DYN_SERVE_HTTP_PORT")
    namespace: str | None = option(
        None,
        help="Kubernetes namespace to act as: DYN_NAMESPACE={namespace}-{graph} "
        "(default: metadata.namespace or 'default')",
        env="DYN_SERVE_NAMESPACE",
    )
    dry_run: bool = option(False, help="print the processes and exit", env="DYN_SERVE_DRY_RUN")
    run_dir: str | None = option(
        None,
        help="state, control socket and file discovery (default {tmp}/dynamo-serve-{uid}/{graph})",
        env="DYN_SERVE_RUN_DIR",
    )
    grace_period_s: float = option(
        10.0, help="seconds children get to exit after SIGTERM", env="DYN_SERVE_GRACE_PERIOD_S"
    )
    backoff_initial_s: float = option(
        1.0, help="first restart delay of a crashed replica", env="DYN_SERVE_BACKOFF_INITIAL_S"
    )
    backoff_max_s: float = option(30.0, help="longest restart delay", env="DYN_SERVE_BACKOFF_MAX_S")
    stable_after_s: float = option(
        10.0,
        help="uptime after which a crash restarts with the first delay again",
        env="DYN_SERVE_STABLE_AFTER_S",
    )
    color: str = option(
        "auto",
        help="colour log prefixes",
        choices=("auto", "always", "never"),
        env="DYN_SERVE_COLOR",
    )


CONFIGMAPS_DIR = "configmaps"


@dataclasses.dataclass(frozen=True)
class ServePlan:
    """What `dynamo serve` will run, fully resolved (used by both dry-run and the runner)."""

    graph: DynamoGraphDeployment
    specs: list[ServiceSpec]
    run_dir: Path
    extra_env: dict[str, str]  # the runner's own settings, on top of each spec's env
    configmaps: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)


def plan(config: ServeConfig, environ: Mapping[str, str] | None = None) -> ServePlan:
    """Load and build the graph for this machine; touches no files."""
    env = os.environ if environ is None else environ
    if not config.file:
        raise ConfigError("dynamo serve: -f/--file GRAPH.yaml is required")
    graph = load_graph(Path(config.file))
    specs = build_graph(
        graph,
        k8s_namespace=config.namespace,
        mode="local",
        http_port=config.http_port,
        discovery_backend=env.get("DYN_DISCOVERY_BACKEND") or None,
    )
    run_dir = (Path(config.run_dir) if config.run_dir else run_dir_for(graph.name)).absolute()
    configmaps = read_configmaps(Path(config.file))  # the file's own, mounted from the run dir
    specs = mount_locally(specs, configmaps, run_dir / CONFIGMAPS_DIR)
    extra = {
        "PATH": f"{run_dir / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}",
        "PYTHONUNBUFFERED": "1",
        CONTROL_ENV: str(run_dir / CONTROL_SOCKET),
        "DYN_FILE_KV": env.get("DYN_FILE_KV") or str(run_dir / "kv"),
    }
    return ServePlan(
        graph=graph, specs=specs, run_dir=run_dir, extra_env=extra, configmaps=configmaps
    )


def local_notes(spec: ServiceSpec) -> list[str]:
    """What of a service's Kubernetes settings does not apply on one machine."""
    notes = []
    if spec.env_from_secret:
        notes.append(f"envFromSecret {spec.env_from_secret!r} is not read locally; export its keys")
    if spec.working_dir and not os.path.isdir(spec.working_dir):
        notes.append(f"workingDir {spec.working_dir} does not exist here; using the current dir")
    if spec.node_count > 1:
        notes.append(f"multinode ({spec.node_count} nodes) runs as one process per replica")
    if spec.env_value_from:
        notes.append(f"valueFrom env {', '.join(spec.env_value_from)} not set locally")
    return notes


def missing_engines(
    specs: list[ServiceSpec], *, installed: Callable[[str], bool] | None = None
) -> list[str]:
    """One line per engine that services run (`python3 -m dynamo.{vllm|sglang|trtllm}`) but
    this interpreter, which runs the local children, lacks; each says what to install."""
    from dynamo.engines import sglang, trtllm, vllm

    engines = {
        "vllm": ("vllm", vllm.INSTALL_HINT),
        "sglang": ("sglang", sglang.INSTALL_HINT),
        "trtllm": ("tensorrt_llm", trtllm.INSTALL_HINT),
    }
    is_installed = installed or (lambda module: importlib.util.find_spec(module) is not None)
    users: dict[str, list[str]] = {}
    for spec in specs:
        backend = detect_backend(spec.command + spec.args)
        if backend is not None:
            users.setdefault(backend, []).append(spec.name)
    lines = []
    for backend, names in users.items():
        module, hint = engines[backend]
        if not is_installed(module):
            lines.append(
                f"{', '.join(names)} run{'s' if len(names) == 1 else ''} dynamo.{backend}, "
                f"but {module} is not installed: {hint}"
            )
    return lines


def print_dry_run(p: ServePlan, out: TextIO, environ: Mapping[str, str] | None = None) -> None:
    base = dict(os.environ if environ is None else environ)
    out.write(f"# graph {p.graph.name}: run dir {p.run_dir}\n")
    for spec in p.specs:
        env = {**base, **spec.env, **p.extra_env}
        out.write(f"{spec.name} ({spec.component_type}) replicas={spec.replicas}\n")
        out.write(f"  command: {shlex.join(local_argv(spec))}\n")
        if spec.working_dir and os.path.isdir(spec.working_dir):
            out.write(f"  cwd: {spec.working_dir}\n")
        for key, value in env_diff(base, env).items():
            out.write(f"  env: {key}={value}\n")
        for note in local_notes(spec):
            out.write(f"  note: {note}\n")
    for line in missing_engines(p.specs):
        out.write(f"# not runnable here: {line}\n")


def prepare_run_dir(p: ServePlan) -> None:
    """Claim the run dir: refuse a live runner there, reset file discovery, write shims."""
    previous: RunState | None = None
    with contextlib.suppress(ConfigError):
        previous = read_state(p.run_dir)
    if previous and previous.state != "stopped" and pid_alive(previous.runner_pid):
        raise ConfigError(
            f"graph {p.graph.name!r} is already running (runner pid "
            f"{previous.runner_pid}, run dir {p.run_dir}); stop it or pass --run-dir"
        )
    p.run_dir.mkdir(parents=True, exist_ok=True)
    kv = p.run_dir / "kv"
    if p.extra_env["DYN_FILE_KV"] == str(kv):  # ours: start with no stale registrations
        shutil.rmtree(kv, ignore_errors=True)
        kv.mkdir()
    write_python_shims(p.run_dir / "bin")
    write_configmaps(p.configmaps, p.run_dir / CONFIGMAPS_DIR)


async def run(p: ServePlan, config: ServeConfig, *, stream: TextIO | None = None) -> int:
    """Supervise the graph until SIGINT/SIGTERM/SIGHUP, then drain. Exit status."""
    printer = LogPrinter([s.name for s in p.specs], stream=stream, color=config.color)
    supervisor = Supervisor(
        p.specs,
        graph=p.graph.name,
        run_dir=p.run_dir,
        env=os.environ,
        extra_env=p.extra_env,
        printer=printer,
        grace_period_s=config.grace_period_s,
        restart=RestartPolicy(
            config.backoff_initial_s, config.backoff_max_s, config.stable_after_s
        ),
        http_port=config.http_port,
    )
    for spec in p.specs:
        for note in local_notes(spec):
            printer.runner(f"{spec.name}: {note}")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            printer.runner(f"{sig.name} again: killing every child now")
            supervisor.kill_all()
            return
        printer.runner(f"{sig.name}: stopping (grace period {config.grace_period_s:g}s)")
        stop.set()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        printer.runner(
            f"serving graph {p.graph.name} (DYN_NAMESPACE {p.specs[0].dynamo_namespace}, "
            f"run dir {p.run_dir}); frontend on http://127.0.0.1:{config.http_port}"
        )
        await supervisor.start()
        await stop.wait()
        await supervisor.shutdown()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    printer.runner("stopped")
    return 0


def serve_main(config: ServeConfig, *, stream: TextIO | None = None) -> int:
    """Entry of `dynamo serve` after argument parsing."""
    p = plan(config)
    if config.dry_run:
        print_dry_run(p, stream or sys.stdout)
        return 0
    missing = missing_engines(p.specs)
    if missing:  # fail before any child starts (each would exit, and be restarted, forever)
        raise MissingExtraError("; ".join(missing))
    prepare_run_dir(p)
    return asyncio.run(run(p, config, stream=stream))


def format_ps(state: RunState, *, alive: bool, now: float | None = None) -> str:
    """The `dynamo ps` table of one run."""
    now = time.time() if now is None else now
    status = state.state if alive else f"{state.state} (runner gone)"
    lines = [
        f"graph {state.graph}  runner pid {state.runner_pid}  {status}  "
        f"namespace {state.dynamo_namespace}  http port {state.http_port}",
        f"{'SERVICE':<24} {'TYPE':<9} {'REPLICA':<8} {'PID':>8} {'STATE':<9} "
        f"{'RESTARTS':>8} {'UPTIME':>8} LAST EXIT",
    ]
    for svc in state.services:
        running = sum(r.state == "running" for r in svc.replicas)
        lines.append(f"{svc.name:<24} {svc.component_type:<9} {running}/{svc.desired}")
        for r in svc.replicas:
            up = f"{now - r.started_at:.0f}s" if r.started_at and r.state == "running" else "-"
            last = "-" if r.last_exit_code is None else str(r.last_exit_code)
            lines.append(
                f"{'':<24} {'':<9} {r.index:<8} {r.pid or '-':>8} {r.state:<9} "
                f"{r.restarts:>8} {up:>8} {last}"
            )
    return "\n".join(lines)
