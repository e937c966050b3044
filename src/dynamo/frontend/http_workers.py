"""`--num-http-workers N`: N frontend processes on one HTTP port, and their supervisor.

`python -m dynamo.frontend --num-http-workers N` (N > 1) becomes this supervisor. It reserves
the port (binding it with `SO_REUSEPORT`, without listening, so `--http-port 0` resolves once
and nothing else takes the port), then starts N children, each a full frontend
(`python -m dynamo.frontend ... --num-http-workers 1`): own discovery watch, tokenizers and
router, listening on the port with `SO_REUSEPORT` so that the kernel spreads new connections
over them. With `--router-mode kv` the children run with `--router-replica-sync`: each builds
the prefix index from the same worker KV events and they share active sequences over the
event plane, as separate frontend replicas do. `/metrics` merges every process's series
(`siblings`, `metrics_merge`).

Supervision: a child that dies is restarted (logged as an error); more than
`MAX_DEATHS` deaths within `DEATH_WINDOW_S`, or a death before every child first served,
stop the whole frontend with a non-zero exit. SIGTERM/SIGINT drain every child; SIGUSR1 is
passed on (each child logs its own in-flight requests). A child gets SIGTERM when the
supervisor dies, however it dies (Linux parent-death signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from dynamo.frontend.config import FrontendConfig
from dynamo.frontend.siblings import HttpWorkerRole, socket_path
from dynamo.runtime.config import RuntimeConfig
from dynamo.runtime.errors import ConfigError

log = logging.getLogger("dynamo.frontend.http_workers")

MAX_AUTO_WORKERS = 8
MAX_DEATHS = 5  # child deaths within DEATH_WINDOW_S before the frontend gives up
DEATH_WINDOW_S = 60.0
RESTART_DELAY_S = 1.0
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 90.0  # after SIGTERM: aiohttp's 60 s connection drain plus the runtime's
_PR_SET_PDEATHSIG = 1


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, within its cgroup's CPU quota (a
    container's CPU limit)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_cpu_quota() -> float | None:
    """CPUs' worth of time the cgroup may use (v2 `cpu.max`, v1 `cfs_quota_us`), None if
    unlimited or unknown."""
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    with contextlib.suppress(OSError, ValueError):
        v1 = Path("/sys/fs/cgroup/cpu")
        quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
        period_us = int((v1 / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    return None


def default_http_workers(cpus: int | None = None) -> int:
    """What `--num-http-workers 0` (the default) means: half the usable CPUs, 1 to 8.

    One frontend process saturates about one core; the other half is left to the
    tokenizers' threads, the kernel's network work and workers on the same host. Each process
    holds its own tokenizers and router state (about 100-200 MB with a small model), hence
    the cap. On 2 cores (and off Linux) this is 1: one process, no supervisor.
    """
    if not sys.platform.startswith("linux"):
        return 1
    return max(1, min(MAX_AUTO_WORKERS, (cpus or usable_cpus()) // 2))


def check_supported(workers: int, runtime_cfg: RuntimeConfig) -> None:
    """Refuse at once what N processes cannot do."""
    if workers <= 1:
        return
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError(
            f"--num-http-workers {workers}: needs Linux's SO_REUSEPORT load balancing, which "
            f"{sys.platform} lacks; run one process (--num-http-workers 1)"
        )
    if runtime_cfg.discovery_backend == "mem":
        raise ConfigError(
            f"--num-http-workers {workers}: --discovery-backend mem is one process's memory; "
            "the HTTP worker processes need a shared one (file, etcd or kubernetes)"
        )


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port` with SO_REUSEPORT, not listening: it takes no connections
    but keeps the port ours (and resolves port 0) while the children come and go."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host or "0.0.0.0", port))
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"cannot bind the HTTP port {host}:{port}: {exc.strerror}"
        ) from exc
    return sock


def _die_with_parent(parent: int) -> None:
    """In the child before exec: SIGTERM when the supervisor dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(1)


def _discovery_name(index: int) -> dict[str, str]:
    """Kubernetes discovery keeps one record per pod and container (DYN_CONTAINER_NAME): each
    HTTP worker process gets its own, and a restarted one replaces its slot's."""
    container = os.environ.get("DYN_CONTAINER_NAME", "").strip()
    return {"DYN_CONTAINER_NAME": f"{container}-http{index}" if container else f"http{index}"}


class Supervisor:
    """Runs N HTTP worker processes; see the module docstring."""

    def __init__(
        self,
        argv: Sequence[str],
        workers: int,
        port: int,
        run_dir: Path,
        *,
        extra_flags: Sequence[str] = (),
        url_base: str = "http://127.0.0.1",
        max_deaths: int = MAX_DEATHS,
        restart_delay_s: float = RESTART_DELAY_S,
    ) -> None:
        self.max_deaths = max_deaths
        self.restart_delay_s = restart_delay_s
        self._argv = [*argv, *extra_flags]
        self.workers = workers
        self.port = port
        self.run_dir = run_dir
        self._url_base = url_base  # scheme and host of the URL logged
        self.children: dict[int, asyncio.subprocess.Process] = {}
        self._deaths: list[float] = []
        self._started = int(time.time())
        self._stop = asyncio.Event()

    def child_argv(self) -> list[str]:
        # flags given last win: one process each, the resolved port
        extra = ["--num-http-workers", "1", "--http-port", str(self.port)]
        return [sys.executable, "-m", "dynamo.frontend", *self._argv, *extra]

    async def spawn(self, index: int) -> asyncio.subprocess.Process:
        role = HttpWorkerRole(self.run_dir, index, self.workers, self._started)
        parent = os.getpid()
        proc = await asyncio.create_subprocess_exec(
            *self.child_argv(),
            env={**os.environ, **role.env(), **_discovery_name(index)},
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=lambda: _die_with_parent(parent),
        )
        self.children[index] = proc
        log.debug("HTTP worker %d started (pid %d)", index, proc.pid)
        return proc

    def signal_all(self, sig: int) -> None:
        for proc in self.children.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        """Start, supervise until SIGTERM/SIGINT (or too many deaths), stop. Exit status."""
        for index in range(self.workers):
            await self.spawn(index)
        try:
            code = await self._wait_ready()
            if code is not None:
                return code
            log.info(
                "frontend listening on %s:%d with %d HTTP worker processes "
                "(pids %s; each one's own metrics on the unix sockets in %s)",
                self._url_base,
                self.port,
                self.workers,
                " ".join(str(p.pid) for p in self.children.values()),
                self.run_dir,
            )
            return await self._supervise()
        finally:
            await self._stop_all()

    async def _wait_ready(self) -> int | None:
        """None once every child serves; else the exit status of the frontend."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._stop.is_set():
                return 0
            for index, proc in self.children.items():
                if proc.returncode is not None:
                    log.error(
                        "HTTP worker %d exited with %s before serving: stopping the frontend",
                        index,
                        proc.returncode,
                    )
                    return proc.returncode if proc.returncode > 0 else 1
            sockets = [socket_path(self.run_dir, i) for i in range(self.workers)]
            if all(path.exists() for path in sockets):
                return None
            await asyncio.sleep(0.05)
        log.error("HTTP workers not serving after %.0f s: stopping the frontend", READY_TIMEOUT_S)
        return 1

    async def _supervise(self) -> int:
        stop = asyncio.create_task(self._stop.wait())
        try:
            while True:
                waits = {
                    asyncio.create_task(proc.wait()): index for index, proc in self.children.items()
                }
                done, _ = await asyncio.wait([stop, *waits], return_when=asyncio.FIRST_COMPLETED)
                for task in waits:
                    task.cancel()
                if stop in done:
                    return 0
                for task in done:
                    index = waits[task]
                    code = self.children[index].returncode
                    if not await self._restart(index, code):
                        return 1
        finally:
            stop.cancel()

    async def _restart(self, index: int, code: int | None) -> bool:
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < DEATH_WINDOW_S] + [now]
        if len(self._deaths) > self.max_deaths:
            log.error(
                "HTTP worker %d exited with %s, %d deaths within %.0f s: stopping the frontend",
                index,
                code,
                len(self._deaths),
                DEATH_WINDOW_S,
            )
            return False
        log.error("HTTP worker %d exited with %s: restarting it", index, code)
        with contextlib.suppress(FileNotFoundError):  # not "serving" until the new one is
            socket_path(self.run_dir, index).unlink()
        await asyncio.sleep(self.restart_delay_s)
        if not self._stop.is_set():
            await self.spawn(index)
        return True

    async def _stop_all(self) -> None:
        self.signal_all(signal.SIGTERM)
        procs = list(self.children.values())
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("HTTP workers still running %.0f s after SIGTERM: killed", STOP_TIMEOUT_S)
            self.signal_all(signal.SIGKILL)
            await asyncio.gather(*(p.wait() for p in procs))


def _run_dir() -> Path:
    """A fresh directory for the children's unix sockets, whose paths must stay under the
    kernel's ~107 bytes: in the temp dir unless that is long, then in /tmp."""
    base = tempfile.gettempdir()
    if len(base) > 60 and os.path.isdir("/tmp"):
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix=f"dynamo-frontend-{os.getpid()}-", dir=base))


async def _run(supervisor: Supervisor) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, supervisor.request_stop)
    loop.add_signal_handler(signal.SIGUSR1, supervisor.signal_all, signal.SIGUSR1)
    return await supervisor.run()


def supervise(
    argv: Sequence[str],
    runtime_cfg: RuntimeConfig,
    cfg: FrontendConfig,
    workers: int,
    *,
    replica_sync: bool,
) -> int:
    """Run `workers` HTTP worker processes of the frontend started with `argv`. Exit status.

    `replica_sync`: the children share active sequences (`--router-replica-sync`)."""
    check_supported(workers, runtime_cfg)
    reserved = reserve_port(cfg.http_host, cfg.http_port)
    run_dir = _run_dir()
    host, scheme = cfg.http_host, "https" if cfg.tls_cert_path else "http"
    try:
        supervisor = Supervisor(
            argv,
            workers,
            int(reserved.getsockname()[1]),
            run_dir,
            extra_flags=["--router-replica-sync"] if replica_sync else [],
            url_base=f"{scheme}://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}",
        )
        return asyncio.run(_run(supervisor))
    finally:
        reserved.close()
        shutil.rmtree(run_dir, ignore_errors=True)
