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
- TensorRT-LLM needs MPI over SSH (`mpirun` from the leader, sshd on the workers, an SSH key
  Secret); not built, so a multi-node TensorRT-LLM service is refused.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass
from typing import Literal

from dynamo.deploy.builder import ServiceSpec
from dynamo.runtime.errors import ConfigError

Orchestrator = Literal["lws", "grove"]
Role = Literal["leader", "worker"]

SGLANG_DIST_INIT_PORT = 29500
SUPPORTED_BACKENDS = ("vllm", "sglang")
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


def check_multinode(svc: ServiceSpec) -> None:
    """Refuse a multi-node service this project cannot run (`ConfigError` naming the gap)."""
    where = f"spec.services.{svc.name}.multinode"
    backend = svc.backend_framework
    if backend == "trtllm":
        raise ConfigError(
            f"{where}: multi-node TensorRT-LLM is not supported: it needs MPI over SSH "
            "(mpirun on the leader, sshd on the workers, an SSH key Secret), which this "
            "operator does not set up; run TensorRT-LLM on one node"
        )
    if backend not in SUPPORTED_BACKENDS or not svc.is_worker:
        raise ConfigError(
            f"{where}: only vLLM and SGLang workers (python3 -m dynamo.vllm | dynamo.sglang) "
            f"run on several nodes; this service is a {svc.component_type} "
            f"with backend {backend or 'unknown'}"
        )
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


def pod_spec(svc: ServiceSpec, orchestrator: Orchestrator, role: Role) -> ServiceSpec:
    """`svc` with the command of its `role` pods under `orchestrator` (see the module doc)."""
    check_multinode(svc)
    backend = svc.backend_framework or ""
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
