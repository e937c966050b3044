"""`--num-http-workers`: the default, what is refused at once, and the supervisor's handling of
its children (real child processes running a small script in place of the frontend)."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import textwrap
from pathlib import Path

import pytest

from dynamo.frontend.config import FrontendConfig
from dynamo.frontend.http_workers import (
    Supervisor,
    check_supported,
    default_http_workers,
    reserve_port,
)
from dynamo.frontend.main import main
from dynamo.runtime.config import RuntimeConfig
from dynamo.runtime.errors import ConfigError

# A stand-in HTTP worker: "serves" (creates its socket file), then behaves as its slot says.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    index = int(os.environ["DYN_HTTP_WORKER_INDEX"])
    run_dir = Path(os.environ["DYN_HTTP_WORKER_DIR"])
    behaviour = sys.argv[1].split(",")[index]
    if behaviour == "fail-at-start":
        sys.exit(2)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    (run_dir / f"http-worker-{index}.sock").touch()
    with open(run_dir / f"started-{index}", "a") as f:
        f.write(f"{os.getpid()}\\n")
    if behaviour == "crash":
        time.sleep(0.2)
        sys.exit(3)
    while True:
        time.sleep(1)
    """
)


class ScriptedSupervisor(Supervisor):
    def __init__(self, run_dir: Path, behaviours: str, **kwargs: float) -> None:
        super().__init__([], len(behaviours.split(",")), 0, run_dir, **kwargs)  # type: ignore[arg-type]
        self._behaviours = behaviours

    def child_argv(self) -> list[str]:
        return [sys.executable, "-c", CHILD, self._behaviours]


def starts(run_dir: Path, index: int) -> int:
    path = run_dir / f"started-{index}"
    return len(path.read_text().split()) if path.exists() else 0


def test_default_is_half_the_cpus_within_1_to_8() -> None:
    if not sys.platform.startswith("linux"):
        assert default_http_workers(32) == 1
        return
    assert [default_http_workers(n) for n in (1, 2, 3, 4, 16, 32, 128)] == [1, 1, 1, 2, 8, 8, 8]


def test_off_linux_one_process_by_default_and_more_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert default_http_workers(32) == 1
    with pytest.raises(ConfigError, match="needs Linux's SO_REUSEPORT"):
        check_supported(2, RuntimeConfig())
    check_supported(1, RuntimeConfig())


def test_refused_at_once() -> None:
    with pytest.raises(ConfigError, match="expected >= 0"):
        FrontendConfig(num_http_workers=-1)
    with pytest.raises(ConfigError, match="mem is one process"):
        check_supported(2, RuntimeConfig(discovery_backend="mem"))
    check_supported(1, RuntimeConfig(discovery_backend="mem"))  # one process: fine


def test_a_port_held_by_another_program_fails_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="cannot bind the HTTP port"):
            reserve_port("127.0.0.1", port)
        argv = ["--http-host", "127.0.0.1", "--http-port", str(port), "--num-http-workers", "2"]
        assert main(argv) == 1


async def test_a_dead_child_is_restarted_and_sigterm_stops_all(tmp_path: Path) -> None:
    supervisor = ScriptedSupervisor(tmp_path, "serve,crash", max_deaths=100, restart_delay_s=0.05)
    run = asyncio.create_task(supervisor.run())
    try:
        for _ in range(400):
            if starts(tmp_path, 1) >= 3:
                break
            await asyncio.sleep(0.05)
        assert starts(tmp_path, 1) >= 3  # died and came back, again and again
        assert starts(tmp_path, 0) == 1  # its sibling kept serving throughout
        supervisor.request_stop()
        assert await asyncio.wait_for(run, 30) == 0
    finally:
        supervisor.signal_all(9)
    assert all(p.returncode is not None for p in supervisor.children.values())


async def test_a_child_dying_over_and_over_stops_the_frontend_non_zero(tmp_path: Path) -> None:
    supervisor = ScriptedSupervisor(tmp_path, "serve,crash", max_deaths=2, restart_delay_s=0.05)
    try:
        assert await asyncio.wait_for(supervisor.run(), 60) == 1
    finally:
        supervisor.signal_all(9)
    assert starts(tmp_path, 1) == 3  # the first start and two restarts
    assert supervisor.children[0].returncode == 0  # the healthy one was stopped (SIGTERM)


async def test_a_child_failing_before_it_serves_stops_the_frontend(tmp_path: Path) -> None:
    supervisor = ScriptedSupervisor(tmp_path, "serve,fail-at-start")
    try:
        assert await asyncio.wait_for(supervisor.run(), 60) == 2  # the child's own status
    finally:
        supervisor.signal_all(9)
    # stopped with SIGTERM: exit 0 from its handler, or -15 if it came before the handler
    assert supervisor.children[0].returncode in (0, -signal.SIGTERM)
