"""Process helpers shared by the end-to-end benchmarks.

A `Stack` is the server side of one measurement (a frontend and its workers, ours or the
real Dynamo's) started as subprocesses in a fresh file-discovery directory and stopped,
directory included, when the `with` block ends, on error and on SIGTERM too. The
benchmark clients live in `benchmarks/clients` and are run by path (the same code measures ours
and the peer); the traces are in `benchmarks/traces`, the peer's scripts in `benchmarks/peer`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLIENTS_DIR = REPO / "benchmarks" / "clients"
PEER_DIR = REPO / "benchmarks" / "peer"
DEFAULT_TRACE = REPO / "benchmarks" / "traces" / "mooncake_conversation_trace.jsonl.xz"
DEFAULT_PEER_VENV = REPO / ".venv-peer"  # benchmarks/peer/setup_peer.sh .venv-peer
MODEL_NAME = "tiny"


class BenchError(RuntimeError):
    """A server would not start or a client failed: the message says which and why."""


def bench_dir(arg: str | None) -> Path:
    """The benchmark clients: the directory `arg` (`--bench-dir`), else `benchmarks/clients`."""
    path = Path(arg) if arg else CLIENTS_DIR
    if not (path / "load.py").is_file():
        raise BenchError(f"no benchmark clients (load.py) in {path}")
    return path.resolve()


def tiny_model_dir() -> str:
    """Our packaged tiny model directory (a real path, so the peer can read it too)."""
    from dynamo.mocker.tinymodel import tiny_model_path

    return str(tiny_model_path())


def peer_python(venv: Path) -> Path | None:
    """The peer venv's python if the real Dynamo is installed there, else None."""
    python = venv / "bin" / "python"
    if not python.is_file():
        return None
    probe = subprocess.run(
        [str(python), "-c", "import dynamo.frontend, dynamo.mocker"], capture_output=True
    )
    return python if probe.returncode == 0 else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _raise_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `with Stack(...)` blocks clean up when killed."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


class Stack:
    """Subprocesses of one server under test, each in its own process group."""

    def __init__(self, name: str, *, log_level: str = "warn") -> None:
        _raise_on_sigterm()
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        self.env = {**os.environ, "DYN_FILE_KV": str(self.dir / "kv"), "DYN_LOG": log_level}
        self._procs: list[tuple[str, subprocess.Popen[bytes], bool]] = []

    def spawn(self, label: str, argv: list[str], *, exits: bool = False) -> subprocess.Popen[bytes]:
        """Start `argv`; `exits` marks a launcher that returns while its children run on."""
        log = open(self.dir / f"{label}.log", "wb")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            argv, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        self._procs.append((label, proc, exits))
        return proc

    def log_tail(self, label: str, lines: int = 20) -> str:
        path = self.dir / f"{label}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        for label, proc, exits in self._procs:
            code = proc.poll()
            if code is not None and (code != 0 or not exits):
                raise BenchError(
                    f"{self.name}: {label} exited with {code}:\n{self.log_tail(label)}"
                )

    def pid(self, label: str) -> int:
        """The process id of `label`: a spawned process, or one `run_peer.sh` reported."""
        for name, proc, _ in self._procs:
            if name == label:
                return proc.pid
        mocker, frontend = map(int, self.log_tail("run_peer", 1).split())
        return {"mocker": mocker, "frontend": frontend}[label]

    def cpu_s(self, label: str) -> float:
        """CPU seconds (user + system, all threads) `label` and the processes it started
        (`--num-http-workers`) have used so far (Linux /proc; a child that exited is not
        counted)."""
        total = 0
        for pid in _process_tree(self.pid(label)):
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def wait_ready(self, url: str, model: str = MODEL_NAME, timeout_s: float = 120.0) -> None:
        """Until `model` is listed and a one-token completion succeeds (a worker is serving)."""
        deadline = time.monotonic() + timeout_s
        body = json.dumps({"model": model, "prompt": "hi", "max_tokens": 1}).encode()
        last = "no answer"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                req = urllib.request.Request(
                    url + "/v1/completions", body, {"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(req, timeout=10) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}: {e.read()[:200]!r}"
            except (urllib.error.URLError, OSError) as e:
                last = repr(e)
            time.sleep(0.5)
        raise BenchError(f"{self.name}: not ready at {url} after {timeout_s:.0f} s ({last})")

    def close(self) -> None:
        for _, proc, _ in self._procs:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, proc, _ in self._procs:
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        self._procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc)."""
    tree, i = [pid], 0
    while i < len(tree):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{tree[i]}/task").iterdir():
                tree += [int(c) for c in (task / "children").read_text().split()]
        i += 1
    return tree


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # a group of only zombies (our own unreaped children) counts as gone
    out = subprocess.run(["ps", "-eo", "pgid=,stat="], capture_output=True, text=True)
    return any(
        int(g) == pgid and not s.startswith("Z")
        for g, s in (line.split() for line in out.stdout.splitlines())
    )


def run_client(argv: list[str], timeout_s: float = 1800.0) -> dict[str, Any]:
    """Run a benchmark client and return the JSON object it prints on stdout."""
    done = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=timeout_s
    )
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv[:1])} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    start = done.stdout.find("{")
    if start < 0:
        raise BenchError(f"no JSON in the output of {argv[0]}:\n{done.stdout[-2000:]}")
    result, _ = json.JSONDecoder().raw_decode(done.stdout[start:])
    return dict(result)


@contextlib.contextmanager
def profiled(stack: Stack, out: Path | None) -> Iterator[None]:
    """py-spy records the stack's frontend and mocker (collapsed stacks, `out/NAME-LABEL.txt`)."""
    if out is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out.mkdir(parents=True, exist_ok=True)
    spies = []
    for label in ("frontend", "mocker"):
        argv = [spy, "record", "--pid", str(stack.pid(label)), "--rate", "100", "--subprocesses"]
        argv += ["--format"]
        argv += ["raw", "-o", str(out / f"{stack.name}-{label}.txt"), "--nonblocking"]
        spies.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
    try:
        yield
    finally:
        for spy_proc in spies:
            spy_proc.send_signal(signal.SIGINT)  # py-spy writes its output and exits
            spy_proc.wait(timeout=60)


def our_stack(
    name: str, model_dir: str, port: int, router_mode: str, *, workers: int, block_size: int,
    blocks: int, speedup: float, http_workers: int = 1,
) -> Stack:  # fmt: skip
    """Our mocker (`workers` engines in one process) and our frontend on `port`
    (`http_workers` processes)."""
    stack = Stack(name)
    py = sys.executable
    try:
        stack.spawn("mocker", [
            py, "-m", "dynamo.mocker", "--model-path", model_dir, "--model-name", MODEL_NAME,
            "--num-workers", str(workers), "--block-size", str(block_size),
            "--num-gpu-blocks-override", str(blocks), "--speedup-ratio", f"{speedup:g}",
        ])  # fmt: skip
        stack.spawn("frontend", [
            py, "-m", "dynamo.frontend", "--http-host", "127.0.0.1", "--http-port", str(port),
            "--router-mode", router_mode, "--kv-cache-block-size", str(block_size),
            "--num-http-workers", str(http_workers),
        ])  # fmt: skip
    except BaseException:
        stack.close()
        raise
    return stack


def peer_stack(
    name: str, python: Path, bench: Path, model_dir: str, port: int, router_mode: str, *,
    workers: int, block_size: int, blocks: int, speedup: float,
) -> Stack:  # fmt: skip
    """The real Dynamo via `run_peer.sh` (its mocker and frontend, file discovery, TCP, ZMQ)."""
    stack = Stack(name)
    venv = python.parent.parent
    run_peer = bench / "run_peer.sh"
    if not run_peer.is_file():  # a --bench-dir of clients only
        run_peer = PEER_DIR / "run_peer.sh"
    try:
        stack.spawn("run_peer", [
            "bash", str(run_peer), str(venv), model_dir, str(port), router_mode,
            str(workers), str(block_size), str(blocks), f"{speedup:g}",
        ], exits=True)  # fmt: skip
    except BaseException:
        stack.close()
        raise
    return stack


def add_common_arguments(parser: argparse.ArgumentParser, *, speedup: float) -> None:
    """The options every end-to-end benchmark has: mocker speed, where things are, the output."""
    parser.add_argument("--speedup", type=float, default=speedup, help="mocker speedup ratio")
    parser.add_argument("--bench-dir", help="clients (default benchmarks/clients)")
    parser.add_argument("--model-dir", help="model directory (default: dynamo:tinymodel)")
    parser.add_argument("--peer-venv", type=Path, default=DEFAULT_PEER_VENV)
    parser.add_argument("--json-out", help="write the results here")


def find_peer(venv: Path, wanted: bool = True) -> Path | None:
    """The peer venv's python when `wanted` and installed; a note says when it is missing."""
    if not wanted:
        return None
    python = peer_python(venv)
    if python is None:
        print(
            f"note: no real Dynamo in {venv} (benchmarks/peer/setup_peer.sh {venv}): peer skipped"
        )
    return python


def start_stack(
    name: str, model_dir: str, router_mode: str, *, peer: Path | None = None,
    bench: Path | None = None, workers: int, block_size: int, blocks: int, speedup: float,
    http_workers: int = 1,
) -> tuple[Stack, str]:  # fmt: skip
    """Ours, or the real Dynamo when `peer` (its python) is given, on a free port and serving.

    Returns the stack and its base URL; the stack is closed if it does not become ready.
    """
    port = free_port()
    shape = {"workers": workers, "block_size": block_size, "blocks": blocks}
    if peer is None:
        stack = our_stack(
            name, model_dir, port, router_mode, speedup=speedup, http_workers=http_workers,
            **shape,
        )  # fmt: skip
    else:
        if bench is None:
            bench = PEER_DIR
        stack = peer_stack(
            name, peer, bench, model_dir, port, router_mode, speedup=speedup, **shape
        )
    url = f"http://127.0.0.1:{port}"
    try:
        stack.wait_ready(url)
    except BaseException:
        stack.close()
        raise
    return stack, url


@contextlib.contextmanager
def cpu_used(
    stack: Stack, labels: tuple[str, ...] = ("frontend", "mocker")
) -> Iterator[dict[str, float]]:
    """CPU seconds each of `labels` spends in the block, filled in at its end (all still alive)."""
    used: dict[str, float] = {}
    start = {label: stack.cpu_s(label) for label in labels}
    yield used
    stack.check_alive()
    used.update({label: stack.cpu_s(label) - start[label] for label in labels})
