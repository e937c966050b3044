"""The profiling Job's entry point: run the profiler, then publish its outputs.

    python -m dynamo.profiler.job --config /etc/dgdr/dgdr.yaml --output-dir /data \
        --output-configmap dgdr-output-NAME --termination-log /dev/termination-log

The profiler (`python -m dynamo.profiler`) runs as a child process; its output passes
through. On success the outputs are written to ConfigMap `--output-configmap`
(`dynamo.profiler.publish`). On failure the exit code is the profiler's and the termination
log gets one line saying why: the profiler's last stderr line, or why publishing failed. The
operator reads that line from the pod's status into the request's `Failed` message.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from dynamo.profiler.publish import PublishError, publish_outputs

MAX_MESSAGE_BYTES = 4096  # the kubelet keeps at most 4 KiB of a termination message


def run_profiler(args: list[str]) -> tuple[int, str]:
    """Run `python -m dynamo.profiler ARGS`, passing its output through; returns its exit code
    and last non-empty stderr line. SIGTERM (the pod being stopped) is passed on, so the
    profiler tears down what it deployed (thorough mode's trial graphs)."""
    cmd = [sys.executable, "-m", "dynamo.profiler", *args]
    last = ""
    with subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, errors="replace") as proc:
        previous = signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                sys.stderr.write(line)
                sys.stderr.flush()
                if line.strip():
                    last = line.strip()
        finally:
            signal.signal(signal.SIGTERM, previous)
    return proc.returncode, last


def write_termination_log(path: Path | None, message: str) -> None:
    print(message, file=sys.stderr)
    if path is None:
        return
    try:
        path.write_text(message.encode()[-MAX_MESSAGE_BYTES:].decode(errors="ignore") + "\n")
    except OSError as exc:
        print(f"cannot write {path}: {exc}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dynamo.profiler.job", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", required=True, help="the DGDR manifest (or its spec)")
    parser.add_argument("--output-dir", type=Path, required=True, help="where the profiler writes")
    parser.add_argument("--output-configmap", required=True, help="ConfigMap to publish to")
    parser.add_argument("--mode", choices=("rapid", "thorough"), help="the profiler's --mode")
    parser.add_argument("--termination-log", type=Path, help="file for the one-line failure reason")
    args = parser.parse_args(argv)
    profiler_args = ["--config", args.config, "--output-dir", str(args.output_dir)]
    if args.mode:
        profiler_args += ["--mode", args.mode]
    code, last = run_profiler(profiler_args)
    if code != 0:
        reason = last or f"the profiler exited with code {code} and printed no error"
        write_termination_log(args.termination_log, reason)
        return code
    try:
        where = publish_outputs(args.output_dir, args.output_configmap, os.environ)
    except PublishError as exc:
        write_termination_log(args.termination_log, str(exc))
        return 1
    print(f"published ConfigMap {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
