"""Child processes of the local runner: how a ServiceSpec becomes an argv, started and signalled.

Each child leads its own process group (so a signal reaches its helpers too) and, on Linux,
asks the kernel to kill it when the runner dies (`PR_SET_PDEATHSIG`), also on `kill -9`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from dynamo.deploy.builder import ServiceSpec, shell_words

PR_SET_PDEATHSIG = 1
DEATH_SIGNAL = signal.SIGKILL
PYTHON_NAMES = frozenset({"python", "python3", f"python3.{sys.version_info.minor}"})


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the child between fork and exec (keep it async-signal-safe and tiny)."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, int(DEATH_SIGNAL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the runner died before prctl took effect
        os._exit(1)


def write_python_shims(bin_dir: Path, python: str = sys.executable) -> Path:
    """`python`/`python3` wrappers that run `python` (this interpreter), for shell commands."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in sorted(PYTHON_NAMES):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec "{python}" "$@"\n')
        shim.chmod(0o755)
    return bin_dir


def local_argv(spec: ServiceSpec, python: str = sys.executable) -> tuple[str, ...]:
    """The argv to run `spec` here: no needless shell, `python3` mapped to this interpreter."""
    argv = shell_words(spec)
    if argv and argv[0] in PYTHON_NAMES:
        argv = (python, *argv[1:])
    return argv


def guarded(argv: tuple[str, ...], python: str = sys.executable) -> tuple[str, ...]:
    """`argv` under `dynamo.deploy.guard`, which takes the child's helpers down with the runner."""
    if not sys.platform.startswith("linux"):
        return argv
    return (python, "-m", "dynamo.deploy.guard", *argv)


def child_env(
    base: Mapping[str, str], spec_env: Mapping[str, str], extra: Mapping[str, str]
) -> dict[str, str]:
    """The child's environment: the runner's, then the spec's, then the runner's own settings."""
    return {**base, **spec_env, **extra}


def env_diff(base: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """Variables `env` sets to a value different from `base`."""
    return {k: v for k, v in sorted(env.items()) if base.get(k) != v}


async def spawn(
    argv: tuple[str, ...], *, env: Mapping[str, str], cwd: str | None = None
) -> asyncio.subprocess.Process:
    """Start a child in its own process group with stdout+stderr piped; dies with this process."""
    parent = os.getpid()
    return await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        process_group=0,
        preexec_fn=lambda: _die_with_parent(parent),
        limit=1 << 20,
    )


def signal_group(pid: int, sig: int) -> bool:
    """Send `sig` to the process group led by `pid`; False if nothing is left to signal."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    return True


async def stop_process(proc: asyncio.subprocess.Process, grace_s: float) -> int:
    """SIGTERM the child's group, wait up to `grace_s`, then SIGKILL what is left. Exit code."""
    if proc.returncode is None:
        signal_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()
    signal_group(proc.pid, signal.SIGKILL)  # helpers the child left behind in its group
    return proc.returncode if proc.returncode is not None else -1
