"""Run a pod's `sh -c` command here, as its container would: the kubelet's `$(VAR)` expansion,
the pod's env, a real `/bin/sh`, and recording stand-ins for the programs the machine lacks
(mpirun, sshd, ssh to other pods). Nothing in the product imports this module."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

_KUBELET_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
RUN_TIMEOUT_S = 30.0


def kubelet_expand(text: str, env: Mapping[str, str]) -> str:
    """The kubelet's expansion of `command`/`args`: `$(NAME)` of a defined var becomes its
    value, `$$` becomes `$`, anything else (an undefined name, `$(cmd args)`, `${...}`) stays."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _KUBELET_REF.sub(sub, text)


def recorder(bin_dir: Path, name: str, body: str = "exit 0") -> Path:
    """An executable `bin_dir/name` that appends its argv (one JSON list a line) to
    `bin_dir/name.calls`, then runs the shell `body`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    calls = bin_dir / f"{name}.calls"
    log = (
        f'"{sys.executable}" -c \'import json,sys; print(json.dumps(sys.argv[1:]))\' "$@" '
        f'>> "{calls}"\n'
    )
    path.write_text(f"#!/bin/sh\n{log}{body}\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def calls(bin_dir: Path, name: str) -> list[list[str]]:
    """Every argv the recorder `name` was run with, in order."""
    path = bin_dir / f"{name}.calls"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run_pod_command(
    command: list[str], args: list[str], env: Mapping[str, str], bin_dir: Path, home: Path
) -> subprocess.CompletedProcess[str]:
    """Run a container's `command` + `args` after kubelet expansion with `env` (plus HOME and
    a PATH with `bin_dir` first), bounded by `RUN_TIMEOUT_S`."""
    full_env = {
        **env,
        "HOME": str(home),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    argv = [kubelet_expand(word, full_env) for word in [*command, *args]]
    return subprocess.run(
        argv, env=full_env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
