"""Our SGLang adapter against the real `sglang` package (CPU only, no model): our calls bind to
SGLang's own signatures, our parser takes the guide's and the examples' commands with SGLang's
own `ServerArgs`, and our KV-event subscriber decodes what SGLang's own publisher sends.

Runs in a venv holding one SGLang release (`scripts/test.sh --sglang`: 0.5.4 and 0.5.23).
`sglang.srt.entrypoints.engine` does not import without CUDA, so `Engine`'s and the tokenizer
manager's signatures are read from that release's source files (`ast`), not imported.
"""

from __future__ import annotations

import ast
import asyncio
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("DYN_TEST_SGLANG") == "1":  # the tier itself: a failed import fails
    server_args_mod = importlib.import_module("sglang.srt.server_args")
    kv_events_mod = importlib.import_module("sglang.srt.disaggregation.kv_events")
else:
    server_args_mod = pytest.importorskip("sglang.srt.server_args", reason="SGLang tier only")
    kv_events_mod = pytest.importorskip("sglang.srt.disaggregation.kv_events")

from dynamo.engines import sglang_compat
from dynamo.engines.sglang import SglangEngine, generate_kwargs, parse_sglang_args
from dynamo.engines.sglang_disagg import bootstrap_address
from dynamo.engines.zmq_kv_events import external_hash
from dynamo.engines.zmq_kv_subscriber import free_tcp_port
from dynamo.protocols.hashing import block_hashes
from dynamo.protocols.kv_events import KvStored
from dynamo.protocols.model_card import BootstrapAddress, WorkerRole
from dynamo.testing.engine_sink import RecordingEngineSink

pytestmark = pytest.mark.sglang

ROOT = Path(__file__).resolve().parents[3]
VERSION = tuple(int(p) for p in importlib.metadata.version("sglang").split(".")[:3])
RealServerArgs = server_args_mod.ServerArgs


def _cpu_server_args_cls() -> Any:
    """SGLang's `ServerArgs`, or where its `__post_init__` needs an accelerator to run (0.5.4
    probes for CUDA and loads quantization configs) a subclass that skips only that check:
    parser, `from_cli_args` and fields stay SGLang's own."""
    try:
        RealServerArgs(model_path="m")
        return RealServerArgs
    except Exception:  # e.g. RuntimeError: No accelerator (CUDA, XPU, HPU) is available.
        pass

    class ServerArgsWithoutDeviceChecks(RealServerArgs):  # type: ignore[misc, valid-type]
        def __post_init__(self) -> None:
            pass

    return ServerArgsWithoutDeviceChecks


ServerArgs = _cpu_server_args_cls()
GUIDE_COMMAND = "--model-path Qwen/Qwen3-0.6B --tp 1 --trust-remote-code"


# --- signatures from SGLang's source -------------------------------------------------------
def _source_def(module: str, cls: str, method: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, module
    tree = ast.parse(Path(spec.origin).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                is_def = isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                if is_def and item.name == method:
                    return item
    raise AssertionError(f"{module}.{cls}.{method} not found in {spec.origin}")


def source_signature(module: str, cls: str, method: str) -> inspect.Signature:
    """The parameters (names, kinds, which have defaults) of a method in SGLang's source."""
    args = _source_def(module, cls, method).args
    params: list[inspect.Parameter] = []
    positional = [*args.posonlyargs, *args.args]
    first_default = len(positional) - len(args.defaults)
    for i, a in enumerate(positional):
        kind = (
            inspect.Parameter.POSITIONAL_ONLY
            if a in args.posonlyargs
            else inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        default = None if i >= first_default else inspect.Parameter.empty
        params.append(inspect.Parameter(a.arg, kind, default=default))
    if args.vararg:
        params.append(inspect.Parameter(args.vararg.arg, inspect.Parameter.VAR_POSITIONAL))
    for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        default = inspect.Parameter.empty if d is None else None
        params.append(inspect.Parameter(a.arg, inspect.Parameter.KEYWORD_ONLY, default=default))
    if args.kwarg:
        params.append(inspect.Parameter(args.kwarg.arg, inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(params)


class _SourceMethod:
    """Something with SGLang's signature, for `sglang_compat.accepts_rid`."""

    def __init__(self, signature: inspect.Signature) -> None:
        self.__signature__ = signature

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("only its signature is used")


def test_async_generate_takes_our_arguments() -> None:
    sig = source_signature("sglang.srt.entrypoints.engine", "Engine", "async_generate")
    takes_rid = sglang_compat.accepts_rid(_SourceMethod(sig))
    assert takes_rid is (VERSION >= (0, 5, 7))
    params = {"max_new_tokens": 4, "ignore_eos": False}
    kwargs = generate_kwargs([1, 2, 3], params, "r-1" if takes_rid else None)
    sig.bind("engine", **kwargs)
    if not takes_rid:  # what the adapter did before: a TypeError on every request
        with pytest.raises(TypeError, match="rid"):
            sig.bind("engine", **generate_kwargs([1], params, "r-1"))


def test_the_disaggregated_legs_bootstrap_arguments_bind() -> None:
    sig = source_signature("sglang.srt.entrypoints.engine", "Engine", "async_generate")
    rid = "r-1" if sglang_compat.accepts_rid(_SourceMethod(sig)) else None
    boot = {"bootstrap_host": "10.0.0.7", "bootstrap_port": 12345, "bootstrap_room": 7}
    sig.bind("engine", **generate_kwargs([1, 2, 3], {"max_new_tokens": 1}, rid, boot))


def test_a_prefill_worker_reads_its_bootstrap_address_from_sglangs_server_args() -> None:
    argv = ["--model-path", "m", "--disaggregation-mode", "prefill"]
    boot = ["--disaggregation-bootstrap-port", "12345", "--host", "0.0.0.0"]
    _, args, role = parse_sglang_args(
        [*argv, *boot], server_args_cls=ServerArgs, resolve_model_path=False
    )
    assert role is WorkerRole.PREFILL
    assert bootstrap_address(args, local_host="10.9.9.9") == BootstrapAddress(
        host="10.9.9.9", port=12345
    )
    multi = [*argv, "--dist-init-addr", "node-a:5000"]
    _, args, _ = parse_sglang_args(multi, server_args_cls=ServerArgs, resolve_model_path=False)
    assert bootstrap_address(args) == BootstrapAddress(host="node-a", port=8998)


def test_engine_takes_server_args_and_aborts_by_rid() -> None:
    init = source_signature("sglang.srt.entrypoints.engine", "Engine", "__init__")
    init.bind("engine", server_args=object())
    abort = source_signature(
        "sglang.srt.managers.tokenizer_manager", "TokenizerManager", "abort_request"
    )
    abort.bind("manager", "rid-1")


# --- ServerArgs and its parser -------------------------------------------------------------
def _example_commands() -> list[tuple[str, list[str]]]:
    import yaml

    out = [("guide: python3 -m dynamo.sglang " + GUIDE_COMMAND, shlex.split(GUIDE_COMMAND))]
    for path in sorted((ROOT / "examples" / "sglang").glob("*.yaml")):
        for name, svc in yaml.safe_load(path.read_text())["spec"]["services"].items():
            main = svc.get("extraPodSpec", {}).get("mainContainer", {})
            line = " ".join([*main.get("command", []), *main.get("args", [])])
            if "dynamo.sglang" in line:
                out.append((f"{path.name}:{name}", shlex.split(line.split("dynamo.sglang")[1])))
    guide = Path("/work/shared/reference/kubernetes-guide.md")
    if guide.exists():  # the guide's YAML blocks: `python3 -m dynamo.sglang` then flag lines
        lines = guide.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() == "python3 -m dynamo.sglang":
                flags = []
                for nxt in lines[i + 1 :]:
                    if not nxt.strip().startswith("--"):
                        break
                    flags += shlex.split(nxt.strip())
                out.append((f"kubernetes-guide.md:{i + 1}", flags))
    return out


@pytest.mark.parametrize(("where", "argv"), _example_commands())
def test_documented_commands_parse_with_sglangs_parser(where: str, argv: list[str]) -> None:
    _, args, role = parse_sglang_args(argv, server_args_cls=ServerArgs, resolve_model_path=False)
    assert isinstance(args, RealServerArgs), where
    assert args.model_path == argv[argv.index("--model-path") + 1]
    if "--tp" in argv:
        assert args.tp_size == int(argv[argv.index("--tp") + 1])
    expected = {"prefill": WorkerRole.PREFILL, "decode": WorkerRole.DECODE}
    mode = argv[argv.index("--disaggregation-mode") + 1] if "--disaggregation-mode" in argv else ""
    assert role is expected.get(mode, WorkerRole.AGGREGATED), where


def test_help_of_the_guide_command() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "dynamo.sglang", *shlex.split(GUIDE_COMMAND), "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "--tp-size" in run.stdout and "--namespace" in run.stdout


def test_server_args_replaced_and_streaming_mode_read() -> None:
    flag = "--incremental-streaming-output" if VERSION >= (0, 5, 10) else "--stream-output"
    _, args, _ = parse_sglang_args(
        [*shlex.split(GUIDE_COMMAND), flag], server_args_cls=ServerArgs, resolve_model_path=False
    )
    assert sglang_compat.incremental_streaming(args) is True
    new = sglang_compat.replace_server_args(args, skip_tokenizer_init=True, kv_events_config="{}")
    assert isinstance(new, RealServerArgs)
    assert (new.skip_tokenizer_init, new.kv_events_config, new.tp_size) == (True, "{}", 1)
    assert args.skip_tokenizer_init is False


# --- KV events from SGLang's own publisher -------------------------------------------------
async def _heard(publisher: Any, sink: RecordingEngineSink, events: list[Any]) -> list[KvStored]:
    """Publish `events` as one SGLang batch until our subscriber hears it (SUB joins late)."""
    batch = kv_events_mod.KVEventBatch(ts=time.time(), events=events)
    for _ in range(200):
        publisher.publish(batch)
        try:
            await asyncio.wait_for(sink.arrived.wait(), 0.05)
            break
        except TimeoutError:
            batch = kv_events_mod.KVEventBatch(ts=time.time(), events=events)
    await asyncio.sleep(0.1)
    return [e.data for e in sink.kv_events if isinstance(e.data, KvStored)]


async def _publish_through_our_subscriber(cfg: dict[str, Any], events: list[Any]) -> Any:
    engine = SglangEngine(ServerArgs(model_path="m"), publish_kv_events=True)
    sink = RecordingEngineSink()
    subscriber = engine._kv_subscriber(cfg, sink)
    subscriber.start()
    publisher = kv_events_mod.EventPublisherFactory.create(json.dumps(cfg), 0)
    try:
        return await _heard(publisher, sink, events)
    finally:
        publisher.shutdown()
        await subscriber.stop()


def _stored(hashes: list[int], parent: int | None, tokens: list[int]) -> Any:
    return kv_events_mod.BlockStored(
        block_hashes=hashes,
        parent_block_hash=parent,
        token_ids=tokens,
        block_size=len(tokens),
        lora_id=None,
    )


async def test_our_subscriber_decodes_sglangs_publisher() -> None:
    cfg = sglang_compat.kv_events_config(None, free_tcp_port())
    tokens = [5, 6, 7, 8]
    stored = await _publish_through_our_subscriber(cfg, [_stored([-3], 11, tokens)])
    assert stored[0].parent_hash == 11
    assert [(b.block_hash, b.tokens_hash) for b in stored[0].blocks] == [
        (external_hash(-3), block_hashes(tokens, 4)[0])
    ]


@pytest.mark.skipif(VERSION < (0, 5, 10), reason="no `bind` option before SGLang 0.5.10")
async def test_kv_events_bind_option() -> None:
    port = free_tcp_port()
    cfg = {"publisher": "zmq", "endpoint": f"tcp://127.0.0.1:{port}", "bind": True, "topic": "t"}
    assert sglang_compat.subscriber_binds(cfg) is False
    stored = await _publish_through_our_subscriber(cfg, [_stored([1], None, [1, 2])])
    assert stored[0].blocks[0].block_hash == 1


async def test_page_parents_repair_0_5_4_style_events() -> None:
    """0.5.4's radix cache hashes each page alone and sends no parent for a node's first page:
    given the prompt, the adapter supplies it."""
    prompt = [1, 2, 3, 4, 5, 6, 7, 8]
    first, second = hash(tuple(prompt[:4])), hash(tuple(prompt[4:]))
    cfg = sglang_compat.kv_events_config(None, free_tcp_port())
    engine = SglangEngine(ServerArgs(model_path="m"), publish_kv_events=True)
    engine._parents.learn(prompt, 4)
    sink = RecordingEngineSink()
    subscriber = engine._kv_subscriber(cfg, sink)
    subscriber.start()
    publisher = kv_events_mod.EventPublisherFactory.create(json.dumps(cfg), 0)
    try:
        stored = await _heard(publisher, sink, [_stored([second], None, prompt[4:])])
    finally:
        publisher.shutdown()
        await subscriber.stop()
    assert stored[0].parent_hash == external_hash(first)


@pytest.mark.skipif(
    VERSION > (0, 5, 9),
    reason="newer radix caches send parents (and need torchvision to import on CPU)",
)
async def test_0_5_4_radix_cache_events_get_their_parent() -> None:
    """SGLang's own radix cache: a prompt extending a cached one stores a parentless page."""
    torch = importlib.import_module("torch")
    radix = importlib.import_module("sglang.srt.mem_cache.radix_cache")
    cache = radix.RadixCache(None, None, page_size=4, enable_kv_cache_events=True)
    first, longer = list(range(1, 9)), list(range(1, 13))
    cache.insert(radix.RadixKey(first), torch.arange(8))
    cache.insert(radix.RadixKey(longer), torch.arange(12))
    events = [e for e in cache.take_events() if isinstance(e, kv_events_mod.BlockStored)]
    assert [e.parent_block_hash is None for e in events] == [True, False, True]

    cfg = sglang_compat.kv_events_config(None, free_tcp_port())
    engine = SglangEngine(ServerArgs(model_path="m"), publish_kv_events=True)
    engine._parents.learn(longer, 4)  # what `generate` does with each prompt
    sink = RecordingEngineSink()
    subscriber = engine._kv_subscriber(cfg, sink)
    subscriber.start()
    publisher = kv_events_mod.EventPublisherFactory.create(json.dumps(cfg), 0)
    try:
        stored = await _heard(publisher, sink, events)
    finally:
        publisher.shutdown()
        await subscriber.stop()
    hashes = [external_hash(e.block_hashes[0]) for e in events]
    # (a batch may arrive more than once: SUB joins while we resend)
    assert [s.parent_hash for s in stored[:3]] == [None, hashes[0], hashes[1]]
