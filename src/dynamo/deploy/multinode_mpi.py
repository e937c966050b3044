"""TensorRT-LLM across nodes: MPI over SSH, as NVIDIA Dynamo's operator runs it.

The leader pod starts every rank with `mpirun` over SSH (port 2222): it copies the SSH key pair
from the mounted Secret into `$HOME/.ssh`, waits until each worker's sshd accepts the key,
then runs `mpirun -n <nodes x GPUs per node> -H <leader>,<worker 1>,... trtllm-llmapi-launch
<the service's command>`. `trtllm-llmapi-launch` runs that command on rank 0 (the leader) and
TensorRT-LLM's MPI worker loop on the other ranks. A worker pod runs sshd in the foreground and
nothing else. Host names are the orchestrator's pod DNS names (see `dynamo.deploy.multinode`).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from dynamo.deploy.builder import ServiceSpec
from dynamo.runtime.errors import ConfigError

SSH_PORT = 2222
SSH_PORT_NAME = "ssh"
# Where the key pair Secret is mounted, and its keys (the names Dynamo's chart uses).
SSH_KEY_MOUNT = "/ssh-pk"
PRIVATE_KEY = "private.key"
PUBLIC_KEY = "private.key.pub"
# sshd re-executes itself, so it must be started by absolute path.
SSHD = "/usr/sbin/sshd"
WORKER_WAIT_S = 900
LAUNCHER = "trtllm-llmapi-launch"
# Open MPI would otherwise shorten the pod DNS names to their first label, which does not resolve.
MPI_ENV = {"OMPI_MCA_orte_keep_fqdn_hostnames": "1"}
# Forwarded to every rank (`mpirun -x`) when set on the leader, beside the container's own env.
FORWARDED_ENV = (
    "CUDA_VISIBLE_DEVICES",
    "HF_DATASETS_CACHE",
    "HF_ENDPOINT",
    "HF_HOME",
    "HF_TOKEN",
    "HOME",
    "HUGGING_FACE_HUB_TOKEN",
    "LD_LIBRARY_PATH",
    "NCCL_DEBUG",
    "NCCL_IB_DISABLE",
    "NCCL_P2P_DISABLE",
    "PATH",
    "PYTHONPATH",
    "TENSORRT_LLM_CACHE_DIR",
    "TOKENIZERS_PARALLELISM",
    "TRANSFORMERS_CACHE",
    "TRTLLM_USE_UCX_KVCACHE",
    "USER",
)


def gpus_per_node(svc: ServiceSpec) -> int:
    """The service's GPUs per pod (requests, else limits): the ranks each node runs."""
    resources = svc.spec.resources
    for item in (resources.requests, resources.limits) if resources else ():
        if item is not None and item.gpu is not None:
            try:
                count = int(item.gpu)
            except ValueError:
                break
            if count > 0:
                return count
    raise ConfigError(
        f"spec.services.{svc.name}.resources: multi-node TensorRT-LLM runs one MPI rank per "
        "GPU: set resources.limits.gpu (GPUs per node) to a whole number above 0"
    )


def _ssh_setup() -> list[str]:
    """Both roles: the key pair into `$HOME/.ssh` (ssh refuses a key others can read, and the
    Secret volume is read-only) and a client config for port 2222 without host-key checks (the
    workers' host keys are made at start). ssh reads `~/.ssh/config` from the user's passwd
    home, which need not be `$HOME`, so every ssh call names the config (`-F`)."""
    return [
        'mkdir -p "$HOME/.ssh" && chmod 700 "$HOME/.ssh"',
        f'cp {SSH_KEY_MOUNT}/{PRIVATE_KEY} "$HOME/.ssh/mpi_key"',
        f'cp {SSH_KEY_MOUNT}/{PUBLIC_KEY} "$HOME/.ssh/authorized_keys"',
        'chmod 600 "$HOME/.ssh/mpi_key" "$HOME/.ssh/authorized_keys"',
        f"printf 'Host *\\n  Port {SSH_PORT}\\n  IdentityFile %s/.ssh/mpi_key\\n"
        "  StrictHostKeyChecking no\\n  UserKnownHostsFile /dev/null\\n  LogLevel ERROR\\n"
        "  BatchMode yes\\n' "
        '"$HOME" > "$HOME/.ssh/config"',
    ]


def worker_script() -> str:
    """A worker pod: sshd on port 2222 in the foreground, as whichever user the image runs.
    Sessions get the container's PATH and LD_LIBRARY_PATH (`SetEnv`, OpenSSH >= 8.7), so that
    mpirun finds Open MPI's daemon and the engine's libraries on this node."""
    sshd_config = (
        f"Port {SSH_PORT}",
        "HostKey %s/.ssh/host/ssh_host_ed25519_key",
        "PidFile %s/.ssh/sshd.pid",
        "AuthorizedKeysFile %s/.ssh/authorized_keys",
        "PasswordAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password",
        'SetEnv "PATH=%s" "LD_LIBRARY_PATH=%s"',
        "StrictModes no",
    )
    return "\n".join(
        [
            "set -e",
            *_ssh_setup(),
            # sshd started as root needs its privilege separation directory.
            'if [ "$(id -u)" = 0 ]; then mkdir -p /run/sshd && chmod 755 /run/sshd; fi',
            'rm -rf "$HOME/.ssh/host" && mkdir -p "$HOME/.ssh/host"',
            "ssh-keygen -q -t ed25519 -N '' -f \"$HOME/.ssh/host/ssh_host_ed25519_key\"",
            "printf '" + "\\n".join(sshd_config) + "\\n' "
            '"$HOME" "$HOME" "$HOME" "$PATH" "${LD_LIBRARY_PATH:-}" > "$HOME/.ssh/sshd_config"',
            f'exec {SSHD} -D -e -f "$HOME/.ssh/sshd_config"',
        ]
    )


def _engine_command(svc: ServiceSpec) -> str:
    """The service's command as one shell line (a `sh -c` script stays as written)."""
    if svc.command[:2] == ("/bin/sh", "-c") or svc.command[:2] == ("sh", "-c"):
        return " ".join(svc.args)
    return shlex.join(svc.argv)


def leader_script(svc: ServiceSpec, hosts: list[str], env_names: Iterable[str]) -> str:
    """The leader pod: wait for every worker's sshd, then `mpirun` one rank per GPU of the
    group. `hosts` are shell words (leader first) that expand to the pods' DNS names;
    `env_names` are the container's env vars, forwarded to every rank with the
    `FORWARDED_ENV` that are set."""
    ranks = len(hosts) * gpus_per_node(svc)
    forwarded = sorted({*FORWARDED_ENV, *env_names})
    rsh_args = (
        f"-F $HOME/.ssh/config -p {SSH_PORT} -o StrictHostKeyChecking=no -i $HOME/.ssh/mpi_key"
    )
    engine = f"exec {LAUNCHER} {_engine_command(svc)}"
    return "\n".join(
        [
            "set -e",
            *_ssh_setup(),
            f"deadline=$(( $(date +%s) + {WORKER_WAIT_S} ))",
            f"for host in {' '.join(hosts[1:])}; do",
            '  until ssh -F "$HOME/.ssh/config" -o ConnectTimeout=5 "$host" true; do',
            '    if [ "$(date +%s)" -ge "$deadline" ]; then',
            f'      echo "worker $host: sshd on port {SSH_PORT} did not answer in '
            f'{WORKER_WAIT_S} s" >&2',
            "      exit 1",
            "    fi",
            "    sleep 2",
            "  done",
            "done",
            'forward=""',
            f"for name in {' '.join(forwarded)}; do",
            '  if printenv "$name" >/dev/null; then forward="$forward -x $name"; fi',
            "done",
            'as_root=""',
            'if [ "$(id -u)" = 0 ]; then as_root=--allow-run-as-root; fi',
            f"exec mpirun $as_root --oversubscribe -n {ranks} -H {','.join(hosts)} "
            f'--mca pml ob1 --mca plm_rsh_args "{rsh_args}" $forward '
            f"/bin/sh -c {shlex.quote(engine)}",
        ]
    )
