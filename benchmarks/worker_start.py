"""How long a mocker worker takes from spawn to registered, alone and several at once.

    python benchmarks/worker_start.py [--at-once 1,3] [--runs 5] [--no-bytecode]

Spawns `--at-once` prefill mockers (`python -m dynamo.mocker --model-path dynamo:tinymodel`)
together in a fresh file-discovery directory, as the planner's scale-up under `dynamo serve`
does, and times each from spawn to its instance key in discovery (the moment a frontend can
route to it), plus the CPU seconds the process used by then. Median and max over `--runs`.

Python's bytecode of the `dynamo` package is compiled once into a private cache first
(`PYTHONPYCACHEPREFIX`), as an installed package has it; `--no-bytecode` starts the workers
with `PYTHONDONTWRITEBYTECODE=1` and no cache, so each compiles its modules from source (what a
source checkout run with that variable set pays).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from _procs import REPO

SRC = REPO / "src" / "dynamo"


def spawn_env(root: Path, pycache: Path | None) -> dict[str, str]:
    env = dict(os.environ, DYN_DISCOVERY_BACKEND="file", DYN_FILE_KV=str(root))
    env["DYN_NAMESPACE"] = "startbench"
    env.pop("PYTHONPYCACHEPREFIX", None)
    if pycache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def one_round(n: int, pycache: Path | None) -> list[tuple[float, float]]:
    """(seconds to registered, CPU seconds by then) for each of `n` mockers spawned together."""
    with tempfile.TemporaryDirectory(prefix="startbench-") as tmp:
        root = Path(tmp)
        env = spawn_env(root, pycache)
        cmd = [sys.executable, "-m", "dynamo.mocker", "--model-path", "dynamo:tinymodel"]
        cmd += ["--model-name", "tinymodel", "--is-prefill-worker"]
        t0 = time.monotonic()
        logs = [(root.parent / f"{root.name}-{i}.log").open("wb") for i in range(n)]
        procs = [
            subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log) for log in logs
        ]
        handles = {p.pid: psutil.Process(p.pid) for p in procs}
        done: dict[int, tuple[float, float]] = {}
        try:
            while len(done) < n:
                if time.monotonic() - t0 > 120:
                    raise SystemExit(f"{n - len(done)} of {n} mockers did not register in 120 s")
                for p, log in zip(procs, logs, strict=True):
                    if p.poll() is not None and p.pid not in done:
                        err = Path(log.name).read_text(errors="replace")
                        raise SystemExit(f"a mocker exited with {p.returncode}: {err[-2000:]}")
                for key in root.glob("*instances*"):
                    pid = owner_pid(key)
                    if pid in handles and pid not in done:
                        cpu = handles[pid].cpu_times()
                        done[pid] = (time.monotonic() - t0, cpu.user + cpu.system)
                time.sleep(0.005)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            for log in logs:
                log.close()
                Path(log.name).unlink(missing_ok=True)
        return list(done.values())


def owner_pid(key: Path) -> int | None:
    """The pid that wrote a file-discovery entry (its owner record), if it says."""
    try:
        data = json.loads(key.read_text())
    except (OSError, ValueError):
        return None
    pid = data.get("pid") if isinstance(data, dict) else None
    return pid if isinstance(pid, int) else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at-once", default="1,3", help="comma-separated group sizes")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-bytecode", action="store_true", help="compile from source each time")
    args = parser.parse_args()
    pycache: Path | None = None
    with tempfile.TemporaryDirectory(prefix="startbench-pyc-") as pyc:
        if not args.no_bytecode:
            pycache = Path(pyc)
            env = dict(os.environ, PYTHONPYCACHEPREFIX=pyc)
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            subprocess.run(
                [sys.executable, "-m", "compileall", "-q", str(SRC)], env=env, check=True
            )
        print(f"load average at start: {os.getloadavg()}; bytecode: {pycache is not None}")
        print(
            f"{'at once':>7}  {'registered s (median, max)':>27}  {'CPU s each (median, max)':>25}"
        )
        for n in (int(x) for x in args.at_once.split(",")):
            one_round(n, pycache)  # warm the OS file cache
            walls: list[float] = []
            cpus: list[float] = []
            for _ in range(args.runs):
                for wall, cpu in one_round(n, pycache):
                    walls.append(wall)
                    cpus.append(cpu)
            print(
                f"{n:>7}  {statistics.median(walls):>15.2f} {max(walls):>10.2f}"
                f"  {statistics.median(cpus):>14.2f} {max(cpus):>10.2f}"
            )
        print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
