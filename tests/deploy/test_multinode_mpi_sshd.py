"""The TensorRT-LLM multi-node SSH path with a real sshd and a real ssh client: the worker
pod's script starts sshd with the key from the Secret layout, the leader pod's script waits
until it logs in, and mpirun's rsh arguments start a command on the worker with the worker
container's PATH. Only DNS (the pods' names, pointed at 127.0.0.1) and mpirun itself (which
records its argv) stand in.

Opt-in where no sshd is installed: `DYN_TEST_SSHD=/path/to/sshd` (an unpacked Debian
openssh-server works: `apt-get download openssh-server libwrap0`, `dpkg-deb -x` both, and set
`LD_LIBRARY_PATH` to the unpacked `usr/lib/x86_64-linux-gnu`). sshd started by root needs its
privilege-separation user `sshd`; without it, as root, `DYN_TEST_SSH_USER` names a login user
to run both pods as (sshd then runs unprivileged, as in a non-root container).
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamo.deploy import multinode_mpi
from dynamo.deploy.multinode import pod_spec
from dynamo.testing.pod_shell import kubelet_expand
from dynamo.testing.servers import free_port

ASKED = bool(os.environ.get("DYN_TEST_SSHD"))  # asked for: a missing piece fails, not skips
SSHD = os.environ.get("DYN_TEST_SSHD") or "/usr/sbin/sshd"
if not Path(SSHD).is_file():
    if ASKED:
        raise RuntimeError(f"DYN_TEST_SSHD={SSHD} is not a file")
    pytest.skip(f"no sshd at {SSHD} (set DYN_TEST_SSHD)", allow_module_level=True)


def _user() -> pwd.struct_passwd | None:
    """Who runs the pods' scripts: None for this process's own user."""
    if os.getuid() != 0:
        return None
    name = os.environ.get("DYN_TEST_SSH_USER")
    if name:
        return pwd.getpwnam(name)
    try:
        pwd.getpwnam("sshd")
    except KeyError:
        reason = "as root sshd needs the user sshd: set DYN_TEST_SSH_USER"
        if ASKED:
            raise RuntimeError(reason) from None
        pytest.skip(reason, allow_module_level=True)
    return None


USER = _user()

from test_multinode_mpi import SHELL_TRTLLM, _svc  # noqa: E402

LEADER = "trt-worker-0.trt-worker.llm"
WORKER = "trt-worker-0-1.trt-worker.llm"
TIMEOUT_S = 30.0


def _as_user(argv: list[str]) -> list[str]:
    if USER is None:
        return argv
    ids = [f"--reuid={USER.pw_uid}", f"--regid={USER.pw_gid}", "--clear-groups"]
    return ["setpriv", *ids, *argv]


@pytest.fixture
def work() -> Iterator[Path]:
    """A directory the pods' user can use (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="dyn-sshd-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _own(*paths: Path) -> None:
    if USER is not None:
        for path in paths:
            for p in [path, *path.rglob("*")]:
                os.chown(p, USER.pw_uid, USER.pw_gid)


def _script(role: str, port: int, keys: Path) -> tuple[str, dict[str, str]]:
    spec = pod_spec(_svc(SHELL_TRTLLM, nodes=2), "lws", role)  # type: ignore[arg-type]
    (script,) = spec.args
    script = script.replace(str(multinode_mpi.SSH_PORT), str(port))
    script = script.replace(multinode_mpi.SSHD, SSHD)
    script = script.replace(f"{multinode_mpi.SSH_KEY_MOUNT}/", f"{keys}/")
    return script, dict(spec.env)


def _env(home: Path, path: str, pod_env: dict[str, str]) -> dict[str, str]:
    env = {**pod_env, "HOME": str(home), "PATH": path, "LWS_LEADER_ADDRESS": LEADER}
    if "LD_LIBRARY_PATH" in os.environ:
        env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
    return env


def _executable(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_leader_logs_in_to_the_worker_sshd_and_runs_a_command_there(work: Path) -> None:
    keys, worker_home, leader_home, bin_dir = (
        work / d for d in ("ssh-pk", "worker-home", "leader-home", "bin")
    )
    for d in (keys, worker_home, leader_home, bin_dir):
        d.mkdir()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "private.key")],
        check=True,
        timeout=TIMEOUT_S,
    )
    # Stand-ins: cluster DNS (every pod name is 127.0.0.1 here) and mpirun (records argv).
    _executable(bin_dir / "ssh", 'exec /usr/bin/ssh -o HostName=127.0.0.1 "$@"')
    _executable(bin_dir / "mpirun", f'printf "%s\\n" "$@" > {work}/mpirun.args')
    _own(work)
    port = free_port()
    worker_script, worker_env = _script("worker", port, keys)
    worker_path = f"/opt/engine/bin:{os.environ['PATH']}"
    env = _env(worker_home, worker_path, worker_env)
    sshd = subprocess.Popen(
        _as_user(["/bin/sh", "-c", kubelet_expand(worker_script, env)]),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        leader_script, leader_env = _script("leader", port, keys)
        env = _env(leader_home, f"{bin_dir}:{os.environ['PATH']}", leader_env)
        done = subprocess.run(
            _as_user(["/bin/sh", "-c", kubelet_expand(leader_script, env)]),
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        argv = (work / "mpirun.args").read_text().splitlines()
        assert argv[argv.index("-H") + 1].split(",") == [LEADER, WORKER]
        rsh_args = argv[argv.index("plm_rsh_args") + 1]
        # What mpirun's rsh launcher does for the worker: ssh <rsh args> <host> <command>.
        ssh = ["/usr/bin/ssh", "-o", "HostName=127.0.0.1", *shlex.split(rsh_args), WORKER]
        remote = subprocess.run(
            _as_user([*ssh, "echo", "$PATH"]),
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        assert remote.returncode == 0, remote.stderr
        assert remote.stdout.strip() == worker_path  # the worker container's PATH
        assert sshd.poll() is None  # sshd keeps running in the foreground
    finally:
        sshd.terminate()
        try:
            out, _ = sshd.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            sshd.kill()
            out, _ = sshd.communicate(timeout=10)
    assert "Server listening" in out, out
