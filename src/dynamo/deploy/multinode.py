"""Per-pod commands of a multi-node service (`multinode.nodeCount` > 1).

Every pod of a group runs the service's worker command; this module adds the flags that make
each pod one rank of a single engine: the node count, this pod's rank and the leader's
address. The values come from the orchestrator's env, as `$(VAR)` references the kubelet
expands in `command`/`args` (LeaderWorkerSet: `LWS_LEADER_ADDRESS`, `LWS_WORKER_INDEX`;
Grove: the scaling group's name and index, the headless Service, the pod index).

- vLLM (multiprocessing multi-node, vLLM >= 0.11): `--nnodes N --node-rank R --master-addr L`
  on every rank, `--headless` on the non-leaders (they run model shards only; `dynamo.vllm`
  then never registers with discovery).
- SGLang: `--nnodes N --node-rank R --dist-init-addr L:29500`; ranks above 0 run SGLang's
  schedulers only (`dynamo.sglang` never registers them).
- TensorRT-LLM: MPI over SSH (`dynamo.deploy.multinode_mpi`): the leader runs `mpirun` over
  every pod of the group, the other pods run sshd only; `mpi_hosts` names them.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass
from typing import Literal

from dynamo.deploy import multinode_mpi
from dynamo.deploy.builder import ServiceSpec
from dynamo.runtime.errors import ConfigError

Orchestrator = Literal["lws", "grove"]
Role = Literal["leader", "worker"]

SGLANG_DIST_INIT_PORT = 29500
SUPPORTED_BACKENDS = ("vllm", "sglang", "trtllm")
# Flags the operator sets per pod; a command that already carries one is refused.
RANK_FLAGS = ("--nnodes", "--node-rank", "--master-addr", "--dist-init-addr", "--headless")
GROVE_LEADER_SUFFIX = "ldr"
GROVE_WORKER_SUFFIX = "wkr"


@dataclass(frozen=True)
class Value:
    """One word of a command line: literal text, or a shell expression (`$((...))`) that only
    a shell evaluates."""

    text: str
    shell: bool = False

    def quoted(self) -> str:
        return f'"{self.text}"' if self.shell else shlex.quote(self.text)


@dataclass(frozen=True)
class RankRefs:
    """Where a pod finds the leader's host and its own rank."""

    leader_host: str
    node_rank: Value


def rank_refs(orchestrator: Orchestrator, service: str, role: Role) -> RankRefs:
    """The orchestrator's env as command-line references, for one pod role of `service`.

    LWS sets `LWS_LEADER_ADDRESS` (the leader pod's DNS name) and `LWS_WORKER_INDEX` (0 on the
    leader) in every pod of a group. Grove names the leader pod
    `{pcsg}-{pcsg index}-{svc}-ldr-0` under the headless Service, and numbers the worker
    clique's pods from 0, so a worker's rank is its pod index + 1 (shell arithmetic)."""
    if orchestrator == "lws":
        rank = Value("0") if role == "leader" else Value("$(LWS_WORKER_INDEX)")
        return RankRefs("$(LWS_LEADER_ADDRESS)", rank)
    host = (
        f"$(GROVE_PCSG_NAME)-$(GROVE_PCSG_INDEX)-{service.lower()}-{GROVE_LEADER_SUFFIX}-0."
        "$(GROVE_HEADLESS_SERVICE)"
    )
    rank = Value("0") if role == "leader" else Value("$((GROVE_PCLQ_POD_INDEX + 1))", shell=True)
    return RankRefs(host, rank)


def mpi_hosts(orchestrator: Orchestrator, service: str, node_count: int) -> list[str]:
    """Shell words that expand to the DNS names of a group's pods, leader first, in a pod of
    that group.

    LWS names a group's pods `{lws}-{group}` (leader) and `{lws}-{group}-{i}` (workers) under
    the headless Service `{lws}` and gives only the leader's name (`{lws}-{group}.{lws}.{ns}`),
    so a worker's name is the leader's with `-{i}` before its first dot (shell parameter
    expansion). Grove names the worker clique's pods `{pcsg}-{index}-{svc}-wkr-{j}` from 0."""
    if orchestrator == "lws":
        leader = "$(LWS_LEADER_ADDRESS)"
        workers = [
            f"${{LWS_LEADER_ADDRESS%%.*}}-{i}.${{LWS_LEADER_ADDRESS#*.}}"
            for i in range(1, node_count)
        ]
        return [leader, *workers]
    prefix = f"$(GROVE_PCSG_NAME)-$(GROVE_PCSG_INDEX)-{service.lower()}"
    leader = f"{prefix}-{GROVE_LEADER_SUFFIX}-0.$(GROVE_HEADLESS_SERVICE)"
    workers = [
        f"{prefix}-{GROVE_WORKER_SUFFIX}-{j}.$(GROVE_HEADLESS_SERVICE)"
        for j in range(node_count - 1)
    ]
    return [leader, *workers]


def check_multinode(svc: ServiceSpec) -> None:
    """Refuse a multi-node service this project cannot run (`ConfigError` naming the gap)."""
    where = f"spec.services.{svc.name}.multinode"
    backend = svc.backend_framework
    if backend not in SUPPORTED_BACKENDS or not svc.is_worker:
        raise ConfigError(
            f"{where}: only vLLM, SGLang and TensorRT-LLM workers (python3 -m dynamo.vllm | "
            f"dynamo.sglang | dynamo.trtllm) run on several nodes; this service is a "
            f"{svc.component_type} with backend {backend or 'unknown'}"
        )
    if backend == "trtllm":
        multinode_mpi.gpus_per_node(svc)
        if not re.search(r"python[0-9.]*\s+-m\s+dynamo\.trtllm\b", " ".join(svc.argv)):
            raise ConfigError(
                f"spec.services.{svc.name}: no `python3 -m dynamo.trtllm` in the command for "
                "mpirun to launch"
            )
        return
    text = " ".join(svc.argv)
    for flag in RANK_FLAGS:
        if re.search(rf"(^|\s){re.escape(flag)}(=|\s|$)", text):
            raise ConfigError(
                f"{where}: remove {flag} from the command; the operator sets it for each "
                "pod of the group"
            )


def rank_flags(svc: ServiceSpec, refs: RankRefs, role: Role) -> list[Value]:
    """The flags that make one pod of `svc` a rank of the engine."""
    nodes = str(svc.node_count)
    if svc.backend_framework == "vllm":
        flags = [Value("--nnodes"), Value(nodes), Value("--node-rank"), refs.node_rank]
        flags += [Value("--master-addr"), Value(refs.leader_host)]
        if role == "worker":
            flags.append(Value("--headless"))
        return flags
    return [
        Value("--nnodes"),
        Value(nodes),
        Value("--node-rank"),
        refs.node_rank,
        Value("--dist-init-addr"),
        Value(f"{refs.leader_host}:{SGLANG_DIST_INIT_PORT}"),
    ]


_MODULE_RE = re.compile(r"python[0-9.]*\s+-m\s+dynamo\.(vllm|sglang)\b")


def _insert(words: tuple[str, ...], backend: str, flags: list[Value]) -> list[Value] | None:
    """`words` with `flags` after `-m dynamo.{backend}`; None when it is not there. A shell
    script word gets the flags spliced into its text."""
    out = [Value(w) for w in words]
    for i, word in enumerate(words):
        if word == f"dynamo.{backend}" and i > 0 and words[i - 1] == "-m":
            return [*out[: i + 1], *flags, *out[i + 1 :]]
        match = _MODULE_RE.search(word)
        if match and " " in word:
            spliced = " ".join(f.quoted() for f in flags)
            text = f"{word[: match.end()]} {spliced}{word[match.end() :]}"
            out[i] = Value(text)
            return out
    return None


def _plain(values: list[Value]) -> tuple[str, ...]:
    return tuple(v.text for v in values)


def _mpi_pod_spec(svc: ServiceSpec, orchestrator: Orchestrator, role: Role) -> ServiceSpec:
    """TensorRT-LLM: the leader runs mpirun over the group, a worker runs sshd."""
    env = {**svc.env, **multinode_mpi.MPI_ENV}
    if role == "worker":
        script = multinode_mpi.worker_script()
    else:
        main = svc.spec.extra_pod_spec.main_container if svc.spec.extra_pod_spec else None
        names = {*env, *svc.env_value_from, *(v.name for v in ((main.env if main else None) or []))}
        hosts = mpi_hosts(orchestrator, svc.name, svc.node_count)
        script = multinode_mpi.leader_script(svc, hosts, names)
    return dataclasses.replace(
        svc, command=("/bin/sh", "-c"), args=(script,), env=dict(sorted(env.items()))
    )


def pod_spec(svc: ServiceSpec, orchestrator: Orchestrator, role: Role) -> ServiceSpec:
    """`svc` with the command of its `role` pods under `orchestrator` (see the module doc)."""
    check_multinode(svc)
    backend = svc.backend_framework or ""
    if backend == "trtllm":
        return _mpi_pod_spec(svc, orchestrator, role)
    flags = rank_flags(svc, rank_refs(orchestrator, svc.name, role), role)
    command, args = svc.command, svc.args
    in_command = _insert(command, backend, flags)
    in_args = None if in_command is not None else _insert(args, backend, flags)
    if in_command is None and in_args is None:
        raise ConfigError(
            f"spec.services.{svc.name}: no `python3 -m dynamo.{backend}` in the command to "
            "add the multi-node flags to"
        )
    if in_command is not None:
        words, split = [*in_command, *map(Value, args)], len(in_command)
    else:
        words, split = [*map(Value, command), *(in_args or [])], len(command)
    if any(w.shell for w in words) and command[:2] != ("/bin/sh", "-c"):
        # A rank computed by shell arithmetic (Grove) needs a shell around an argv command.
        script = "exec " + " ".join(w.quoted() for w in words)
        return dataclasses.replace(svc, command=("/bin/sh", "-c"), args=(script,))
    plain = _plain(words)
    return dataclasses.replace(svc, command=plain[:split], args=plain[split:])
