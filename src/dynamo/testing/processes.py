"""Child processes for integration tests: spawn `python -m ...`, wait for a line, clean up.

A child that crashes while a test waits on it fails the wait at once, with its exit code and
the last lines it printed, instead of letting the test run into its timeout.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp

FRONTEND_LISTENING = re.compile(rb"frontend listening on (http://[^\s\"]+)")
ECHO_WORKER_READY = re.compile(rb"ready ([0-9a-f]+)")
LOG_TAIL_LINES = 40
# Deaths by these signals are crashes; SIGKILL/SIGTERM/SIGINT are what tests send on purpose.
_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGFPE}


class ChildCrashedError(AssertionError):
    """A child process died on its own while the test was waiting for it."""


def crashed(returncode: int | None) -> bool:
    """Did a child end by failing (exit code > 0 or a fatal signal), rather than by a clean
    exit or a kill the test itself sent?"""
    if returncode is None or returncode == 0:
        return False
    return returncode > 0 or -returncode in _CRASH_SIGNALS


def mocker_args(
    *extra: str,
    model_name: str = "tinymodel",
    block_size: int | None = 16,
    speedup_ratio: float | None = 20,
    num_workers: int | None = None,
) -> tuple[str, ...]:
    """`python -m dynamo.mocker` arguments serving the bundled tiny model (for `Procs.spawn`).

    `None` leaves a flag at the mocker's default; `extra` flags go last.
    """
    args = ["dynamo.mocker", "--model-path", "dynamo:tinymodel", "--model-name", model_name]
    if num_workers is not None:
        args += ["--num-workers", str(num_workers)]
    if block_size is not None:
        args += ["--block-size", str(block_size)]
    if speedup_ratio is not None:
        args += ["--speedup-ratio", str(speedup_ratio)]
    return (*args, *extra)


class Procs:
    """Children started by one test; `stop_all` terminates them (SIGKILL after 15 s).

    `env` is added to every child's environment (over this process's own).
    """

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = dict(env or {})
        self.children: list[asyncio.subprocess.Process] = []
        self._drains: list[asyncio.Task[None]] = []
        self._drained: set[int] = set()
        self._tails: dict[int, collections.deque[bytes]] = {}
        self._args: dict[int, tuple[str, ...]] = {}  # for crash messages

    async def spawn(
        self, *args: str, env: dict[str, str] | None = None
    ) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env, **(env or {})},
            start_new_session=True,  # its own process group: engine subprocesses die with it
        )
        self._args[id(proc)] = args
        self.children.append(proc)
        return proc

    def drain(self, proc: asyncio.subprocess.Process, log: Path | None = None) -> None:
        """Keep reading a child's output so it never blocks on a full pipe (its last
        `LOG_TAIL_LINES` lines are kept for `check_alive`'s message; all of it goes to `log`
        when given)."""
        self._drained.add(id(proc))
        tail = self._tails.setdefault(id(proc), collections.deque(maxlen=LOG_TAIL_LINES))
        task = _drain(proc, tail, log)
        self._drains.append(asyncio.get_running_loop().create_task(task))

    async def check_alive(self) -> None:
        """Raise `ChildCrashedError` (exit code, command, last log lines) if a child crashed."""
        for proc in self.children:
            if crashed(proc.returncode):
                raise ChildCrashedError(await self._describe(proc))

    async def _describe(self, proc: asyncio.subprocess.Process) -> str:
        tail = self._tails.setdefault(id(proc), collections.deque(maxlen=LOG_TAIL_LINES))
        if id(proc) not in self._drained:  # nobody reads its pipe: take what is left there
            self._drained.add(id(proc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_drain(proc, tail), 2)
        args = " ".join(self._args.get(id(proc), ()))
        lines = b"".join(tail).decode(errors="replace")
        return f"child {proc.pid} ({args}) exited with {proc.returncode}; last lines:\n{lines}"

    async def wait_for_instances(self, url: str, n: int, timeout_s: float = 60) -> list[object]:
        """Poll the frontend's /health until it lists `n` worker instances; fail at once when
        one of this test's children crashes meanwhile."""
        return await wait_for_instances(url, n, timeout_s, procs=self)

    def collect(self, proc: asyncio.subprocess.Process) -> list[bytes]:
        """Like `drain`, but keep the child's output lines (for tests that read its logs)."""
        lines: list[bytes] = []
        self._drained.add(id(proc))
        self._drains.append(asyncio.get_running_loop().create_task(_collect(proc, lines)))
        return lines

    async def frontend(self, *args: str) -> str:
        """Start `python -m dynamo.frontend` on a free port; return its base URL."""
        proc = await self.spawn(
            "dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", "0", *args
        )
        url = (await read_until(proc, FRONTEND_LISTENING)).decode()
        self.drain(proc)
        return url

    async def echo_worker(self, delay_s: float) -> tuple[asyncio.subprocess.Process, int]:
        """Start `python -m dynamo.testing.echo_worker`; return it and its instance id."""
        proc = await self.spawn("dynamo.testing.echo_worker", "--delay-s", str(delay_s))
        instance_id = int(await read_until(proc, ECHO_WORKER_READY), 16)
        self.drain(proc)
        return proc, instance_id

    @staticmethod
    def kill_group(proc: asyncio.subprocess.Process, sig: int = signal.SIGKILL) -> None:
        """Signal the child and everything it started (like a pod or machine dying)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    async def stop_all(self) -> None:
        for proc in self.children:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.children:
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
            self.kill_group(proc)  # leftovers of its group, if any
        for proc in self.children:  # read to EOF so the pipe transports close
            if id(proc) not in self._drained:
                await asyncio.wait_for(_drain(proc), 15)
        await asyncio.wait_for(asyncio.gather(*self._drains, return_exceptions=True), 15)


async def read_until(
    proc: asyncio.subprocess.Process, pattern: re.Pattern[bytes], timeout_s: float = 60
) -> bytes:
    """Read the child's output until `pattern` matches a line; return its first group."""
    assert proc.stdout is not None
    seen = b""
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout_s)
        if not line:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
            raise ChildCrashedError(
                f"child {proc.pid} exited with {proc.returncode} before {pattern.pattern!r}:\n"
                + seen.decode(errors="replace")[-8000:]
            )
        seen += line
        match = pattern.search(line)
        if match:
            return match.group(1)


async def _drain(
    proc: asyncio.subprocess.Process,
    tail: collections.deque[bytes] | None = None,
    log: Path | None = None,
) -> None:
    assert proc.stdout is not None
    if tail is None:
        while await proc.stdout.read(65536):
            pass
        return
    with log.open("ab") if log is not None else contextlib.nullcontext() as out:
        while True:
            try:
                line = await proc.stdout.readline()
            except ValueError:  # a line longer than the stream's limit: keep its start
                line = await proc.stdout.read(65536)
            if not line:
                return
            tail.append(line)
            if out is not None:
                out.write(line)


async def _collect(proc: asyncio.subprocess.Process, lines: list[bytes]) -> None:
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        lines.append(line)


async def wait_for_instances(
    url: str, n: int, timeout_s: float = 60, *, procs: Procs | None = None
) -> list[object]:
    """Poll the frontend's /health until it lists `n` worker instances. With `procs`, a crashed
    child (see `crashed`) fails the wait at once, its last log lines in the message."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            if procs is not None:
                await procs.check_alive()
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url + "/health") as resp:
                    body = await resp.json()
                    instances = body.get("instances", [])
                    if len(instances) == n:
                        return list(instances)
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the frontend never saw {n} instances in {timeout_s} s")
            await asyncio.sleep(0.05)
