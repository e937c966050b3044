"""Multi-node TensorRT-LLM pod commands, run here: the leader's and worker's `sh -c` scripts go
through the kubelet's `$(VAR)` expansion with the orchestrator's env and a real `/bin/sh`, with
recording stand-ins for mpirun, ssh and sshd (no MPI and no sshd on this machine). The host
names the shell derives are the pods' DNS names; mpirun gets one rank per GPU of the group."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dynamo.deploy import multinode_mpi
from dynamo.deploy.builder import ServiceSpec, build_service
from dynamo.deploy.graph import load_graph
from dynamo.deploy.multinode import mpi_hosts, pod_spec
from dynamo.runtime.errors import ConfigError
from dynamo.testing.pod_shell import calls, kubelet_expand, recorder, run_pod_command

SHELL_TRTLLM = {
    "command": ["/bin/sh", "-c"],
    "args": ["python3 -m dynamo.trtllm --model-path M --tensor-parallel-size 12"],
}
LWS_LEADER = "trt-worker-0.trt-worker.llm"
GROVE_ENV = {
    "GROVE_PCSG_NAME": "trt-0-worker",
    "GROVE_PCSG_INDEX": "1",
    "GROVE_HEADLESS_SERVICE": "trt-0.llm.svc.cluster.local",
    "GROVE_PCLQ_POD_INDEX": "0",
}


def _svc(container: dict[str, Any], nodes: int = 3, gpus: str | None = "4") -> ServiceSpec:
    worker: dict[str, Any] = {
        "componentType": "worker",
        "multinode": {"nodeCount": nodes},
        "envs": [{"name": "HF_HOME", "value": "/cache"}],
        "extraPodSpec": {"mainContainer": copy.deepcopy(container)},
    }
    if gpus is not None:
        worker["resources"] = {"limits": {"gpu": gpus}}
    doc = {
        "apiVersion": "nvidia.com/v1alpha1",
        "kind": "DynamoGraphDeployment",
        "metadata": {"name": "trt", "namespace": "llm"},
        "spec": {"backendFramework": "trtllm", "services": {"Worker": worker}},
    }
    return build_service(load_graph(doc), "Worker", mode="kubernetes")


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """A real key pair laid out as the Secret volume is (`private.key`, `private.key.pub`)."""
    mount = tmp_path / "ssh-pk"
    mount.mkdir()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(mount / "private.key")],
        check=True,
        timeout=30,
    )
    return mount


def _run(
    spec: ServiceSpec, env: dict[str, str], tmp_path: Path, keys: Path
) -> subprocess.CompletedProcess[str]:
    """The pod's command with the Secret mount and sshd at this test's paths."""
    (script,) = spec.args
    assert "$$" not in script  # the kubelet would turn it into "$"
    script = script.replace(f"{multinode_mpi.SSH_KEY_MOUNT}/", f"{keys}/")
    script = script.replace(multinode_mpi.SSHD, str(tmp_path / "bin" / "sshd"))
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    pod_env = {**spec.env, **env}
    return run_pod_command(list(spec.command), [script], pod_env, tmp_path / "bin", home)


def _forwarded(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == "-x"]


def test_lws_leader_waits_for_each_worker_then_runs_mpirun(tmp_path: Path, keys: Path) -> None:
    bin_dir = tmp_path / "bin"
    recorder(bin_dir, "ssh")
    recorder(bin_dir, "mpirun")
    leader = pod_spec(_svc(SHELL_TRTLLM), "lws", "leader")
    env = {"LWS_LEADER_ADDRESS": LWS_LEADER, "LWS_WORKER_INDEX": "0", "HF_TOKEN": "t"}
    done = _run(leader, env, tmp_path, keys)
    assert done.returncode == 0, done.stderr
    workers = ["trt-worker-0-1.trt-worker.llm", "trt-worker-0-2.trt-worker.llm"]
    home = tmp_path / "home"
    config = f"{home}/.ssh/config"
    assert calls(bin_dir, "ssh") == [
        ["-F", config, "-o", "ConnectTimeout=5", host, "true"] for host in workers
    ]
    [argv] = calls(bin_dir, "mpirun")
    as_root = ["--allow-run-as-root"] if os.getuid() == 0 else []
    x_at = argv.index("-x")
    assert argv[:x_at] == [
        *as_root,
        *("--oversubscribe", "-n", "12", "-H", ",".join([LWS_LEADER, *workers])),
        *("--mca", "pml", "ob1", "--mca", "plm_rsh_args"),
        f"-F {config} -p 2222 -o StrictHostKeyChecking=no -i {home}/.ssh/mpi_key",
    ]
    assert argv[-3:] == [
        "/bin/sh",
        "-c",
        "exec trtllm-llmapi-launch python3 -m dynamo.trtllm --model-path M "
        "--tensor-parallel-size 12",
    ]
    # Forwarded: the container's env and the well-known engine vars, where set.
    forwarded = _forwarded(argv)
    assert forwarded == sorted(forwarded)
    assert {"HF_HOME", "HF_TOKEN", "HOME", "PATH", "OMPI_MCA_orte_keep_fqdn_hostnames"} <= set(
        forwarded
    )
    assert {"DYN_NAMESPACE", "DYN_SYSTEM_PORT"} <= set(forwarded)
    assert "CUDA_VISIBLE_DEVICES" not in forwarded  # not set in this pod
    assert leader.env["OMPI_MCA_orte_keep_fqdn_hostnames"] == "1"
    # The key pair is usable by ssh: private key and authorized_keys readable by the owner only.
    ssh = home / ".ssh"
    assert (ssh / "mpi_key").read_text() == (keys / "private.key").read_text()
    assert (ssh / "mpi_key").stat().st_mode & 0o777 == 0o600
    assert (ssh / "config").read_text() == (
        f"Host *\n  Port 2222\n  IdentityFile {home}/.ssh/mpi_key\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
        "  BatchMode yes\n"
    )


def test_grove_hosts_are_the_clique_pods(tmp_path: Path, keys: Path) -> None:
    bin_dir = tmp_path / "bin"
    recorder(bin_dir, "ssh")
    recorder(bin_dir, "mpirun")
    svc = _svc({"command": ["python3", "-m", "dynamo.trtllm"], "args": ["--model-path", "M"]})
    done = _run(pod_spec(svc, "grove", "leader"), GROVE_ENV, tmp_path, keys)
    assert done.returncode == 0, done.stderr
    svc_dns = "trt-0.llm.svc.cluster.local"
    hosts = [
        f"trt-0-worker-1-worker-ldr-0.{svc_dns}",
        f"trt-0-worker-1-worker-wkr-0.{svc_dns}",
        f"trt-0-worker-1-worker-wkr-1.{svc_dns}",
    ]
    assert [c[4] for c in calls(bin_dir, "ssh")] == hosts[1:]
    [argv] = calls(bin_dir, "mpirun")
    assert argv[argv.index("-H") + 1] == ",".join(hosts)
    assert argv[argv.index("-n") + 1] == "12"
    # An argv command is launched as written, quoted for the ranks' shell.
    assert argv[-1] == "exec trtllm-llmapi-launch python3 -m dynamo.trtllm --model-path M"


def test_host_words_per_orchestrator() -> None:
    assert mpi_hosts("lws", "Worker", 2) == [
        "$(LWS_LEADER_ADDRESS)",
        "${LWS_LEADER_ADDRESS%%.*}-1.${LWS_LEADER_ADDRESS#*.}",
    ]
    assert kubelet_expand(mpi_hosts("grove", "Worker", 2)[1], GROVE_ENV) == (
        "trt-0-worker-1-worker-wkr-0.trt-0.llm.svc.cluster.local"
    )


def test_leader_retries_until_the_worker_sshd_answers(tmp_path: Path, keys: Path) -> None:
    bin_dir = tmp_path / "bin"
    count = tmp_path / "ssh-tries"
    # Refused twice (sshd not up yet), then accepted.
    recorder(bin_dir, "ssh", f'echo x >> "{count}"; [ "$(wc -l < "{count}")" -ge 3 ]')
    recorder(bin_dir, "sleep")
    recorder(bin_dir, "mpirun")
    leader = pod_spec(_svc(SHELL_TRTLLM, nodes=2), "lws", "leader")
    done = _run(leader, {"LWS_LEADER_ADDRESS": LWS_LEADER}, tmp_path, keys)
    assert done.returncode == 0, done.stderr
    assert len(calls(bin_dir, "ssh")) == 3
    assert calls(bin_dir, "sleep") == [["2"], ["2"]]
    assert len(calls(bin_dir, "mpirun")) == 1


def test_leader_gives_up_when_a_worker_never_answers(tmp_path: Path, keys: Path) -> None:
    bin_dir = tmp_path / "bin"
    clock = tmp_path / "clock"
    clock.write_text("1000\n")
    recorder(bin_dir, "ssh", "exit 255")
    recorder(bin_dir, "sleep")
    # A clock that moves 100 s per reading: the 900 s deadline passes without waiting.
    recorder(bin_dir, "date", f'now=$(cat "{clock}"); echo $((now + 100)) > "{clock}"; echo $now')
    recorder(bin_dir, "mpirun")
    leader = pod_spec(_svc(SHELL_TRTLLM, nodes=2), "lws", "leader")
    done = _run(leader, {"LWS_LEADER_ADDRESS": LWS_LEADER}, tmp_path, keys)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "worker trt-worker-0-1.trt-worker.llm: sshd on port 2222 did not answer in 900 s"
    )
    assert calls(bin_dir, "mpirun") == []


def test_worker_runs_sshd_in_the_foreground_and_nothing_else(tmp_path: Path, keys: Path) -> None:
    bin_dir = tmp_path / "bin"
    recorder(bin_dir, "sshd")
    recorder(bin_dir, "mpirun")
    worker = pod_spec(_svc(SHELL_TRTLLM), "lws", "worker")
    assert "dynamo.trtllm" not in worker.args[0]
    env = {"LWS_LEADER_ADDRESS": LWS_LEADER, "LWS_WORKER_INDEX": "2", "LD_LIBRARY_PATH": "/x"}
    done = _run(worker, env, tmp_path, keys)
    assert done.returncode == 0, done.stderr
    ssh = tmp_path / "home" / ".ssh"
    assert calls(bin_dir, "sshd") == [["-D", "-e", "-f", f"{ssh}/sshd_config"]]
    assert calls(bin_dir, "mpirun") == []
    config = (ssh / "sshd_config").read_text().splitlines()
    assert config[:4] == [
        "Port 2222",
        f"HostKey {ssh}/host/ssh_host_ed25519_key",
        f"PidFile {ssh}/sshd.pid",
        f"AuthorizedKeysFile {ssh}/authorized_keys",
    ]
    assert "PasswordAuthentication no" in config
    # Sessions (mpirun's daemons) get this container's PATH and LD_LIBRARY_PATH.
    assert f'SetEnv "PATH={bin_dir}:' in config[-2] and config[-2].endswith(
        '" "LD_LIBRARY_PATH=/x"'
    )
    assert (ssh / "host" / "ssh_host_ed25519_key").is_file()
    assert (ssh / "authorized_keys").read_text() == (keys / "private.key.pub").read_text()
    assert (ssh / "authorized_keys").stat().st_mode & 0o777 == 0o600


def test_without_gpus_there_are_no_ranks_to_count() -> None:
    with pytest.raises(ConfigError) as err:
        pod_spec(_svc(SHELL_TRTLLM, gpus=None), "lws", "leader")
    assert str(err.value) == (
        "spec.services.Worker.resources: multi-node TensorRT-LLM runs one MPI rank per GPU: "
        "set resources.limits.gpu (GPUs per node) to a whole number above 0"
    )


def test_kubelet_expansion_leaves_shell_syntax_alone() -> None:
    env = {"A": "x"}
    text = "$(A) $(B) $(id -u) ${A%%.*} $((1 + 2)) $$"
    assert kubelet_expand(text, env) == "x $(B) $(id -u) ${A%%.*} $((1 + 2)) $"
