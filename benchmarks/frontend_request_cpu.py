"""The frontend's synchronous CPU per long-prompt request, stage by stage, in one process.

    python benchmarks/frontend_request_cpu.py [--tokens 1024,3072,8192] [--iterations 200]
        [--repeats 5] [--rounds 3] [--baseline-src /path/to/other/checkout/src]

Times the stages a request passes on the event loop, for a chat request with one long
message, a completion with a long text prompt and a completion with a token-id prompt:

  parse_*      parse and validate the JSON body (`protocol.parse_body`)
  render       the chat template applied to the long message (`chat_prompt_text`)
  check_ids    the token-id prompt checked against the vocabulary (`completion_prompt_ids`)
  encode       tokenizing the text prompt (runs in the encoder threads for long texts: CPU,
               but not the event loop's)
  build        the `EngineRequest` (`Preprocessor.engine_request`)
  legs         the disaggregated prefill and decode legs built from it
  pack_legs    msgpack of both legs' REQUEST frames, as the TCP request plane packs them
  hash         block and sequence hashes of the prompt (block size 16), as the KV router does
  route_x3     the KV router's hashing of one disaggregated request's prompt: the decode
               pool's preview, the prefill leg's and the decode leg's routing

Each figure is the best of `--repeats` runs of `--iterations` calls, in CPU microseconds per
call (`time.process_time`), and the best of `--rounds` fresh processes, so other load on the
machine inflates it little. The `ids total` line sums the on-loop stages of a token-id request
that goes through KV routers and both disaggregated legs (conditional disaggregation:
`route_x3`). With `--baseline-src` the same measurement also runs against another checkout's
`src` (e.g. the main branch), its processes alternating with this tree's, and the table shows
both side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

STAGES = (
    "parse_chat",
    "parse_text",
    "parse_ids",
    "render",
    "check_ids",
    "encode",
    "build",
    "legs",
    "pack_legs",
    "hash",
    "route_x3",
)
ON_LOOP_IDS = ("parse_ids", "check_ids", "build", "legs", "pack_legs", "route_x3")


def best_us(fn: Callable[[], object], iterations: int, repeats: int) -> float:
    """Best of `repeats` runs: CPU microseconds per call of `fn`."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(iterations):
            fn()
        best = min(best, (time.process_time() - start) / iterations)
    return best * 1e6


def measure(tokens: list[int], iterations: int, repeats: int) -> dict[str, dict[str, float]]:
    """{tokens: {stage: us}} for the code importable as `dynamo` in this process."""
    import msgpack

    from dynamo.frontend.disagg import decode_request, prefill_request
    from dynamo.frontend.preprocess import Preprocessor
    from dynamo.frontend.preprocessor_cache import PreprocessorCache
    from dynamo.frontend.protocol import ChatCompletionRequest, CompletionRequest, parse_body
    from dynamo.protocols.engine import EngineRequest
    from dynamo.protocols.hashing import block_hashes, sequence_hashes
    from dynamo.testing.frontend_harness import tiny_card

    async def preprocessor() -> Preprocessor:
        cache = PreprocessorCache(encode_threads=1)
        pre = await cache.get(tiny_card(context_length=100_000))
        await cache.close()
        return pre

    pre = asyncio.run(preprocessor())
    pack = msgpack.Packer(use_bin_type=True).pack
    try:  # the KV router's hashing of a prompt (`prompt_hashes` since this benchmark)
        from dynamo.router.kv_policy import prompt_hashes
    except ImportError:  # an older checkout: hashed anew each time

        def prompt_hashes(token_ids: Any, block_size: int) -> tuple[list[int], list[int]]:
            local = block_hashes(token_ids, block_size)
            return local, sequence_hashes(local)

    try:  # the REQUEST frame as the TCP client packs it (`packing` since this benchmark)
        from dynamo.runtime.transport.packing import pack_message

        def pack_request(pack: Any, sid: int, name: str, rid: str, request: Any) -> bytes:
            return pack_message(pack, [0, sid, name, rid, request], 4)

    except ImportError:  # an older checkout (--baseline-src): one `pack` of the whole frame

        def pack_request(pack: Any, sid: int, name: str, rid: str, request: Any) -> bytes:
            return bytes(pack([0, sid, name, rid, request]))

    words = " ".join(f"word{i % 97} of the long prompt," for i in range(max(tokens)))
    params = {"bootstrap_host": "127.0.0.1", "bootstrap_port": 8998, "bootstrap_room": 7}
    out: dict[str, dict[str, float]] = {}
    for n in tokens:
        ids = [(i * 7919) % pre.vocab_size for i in range(n)]
        text = pre.tokenizer.decode(pre.encode(words)[:n])
        chat_body = json.dumps(
            {"model": "tiny", "messages": [{"role": "user", "content": text}], "max_tokens": 16}
        ).encode()
        text_body = json.dumps({"model": "tiny", "prompt": text, "max_tokens": 16}).encode()
        ids_body = json.dumps({"model": "tiny", "prompt": ids, "max_tokens": 16}).encode()
        chat_req = parse_body(ChatCompletionRequest, chat_body)
        req = parse_body(CompletionRequest, ids_body)
        checked = pre.completion_prompt_ids(req)
        er = pre.engine_request(req, checked, "req-1")

        def legs(er: EngineRequest = er) -> tuple[EngineRequest, EngineRequest]:
            return prefill_request(er, {"bootstrap_room": 7}), decode_request(er, params)

        # Each call a request with its own prompt list, as each arrival has (the transport may
        # reuse the packed prompt of one request's first leg for its second, not more).
        other: EngineRequest = {**er, "token_ids": list(checked)}
        ers = itertools.cycle([er, other])

        def pack_legs(ers: Iterator[EngineRequest] = ers) -> tuple[bytes, bytes]:
            prefill, decode = legs(next(ers))
            return (
                pack_request(pack, 1, "generate", "req-1", prefill),
                pack_request(pack, 2, "generate", "req-1", decode),
            )

        def route_x3(ers: Iterator[EngineRequest] = ers) -> None:
            ids = next(ers)["token_ids"]
            for _ in range(3):  # the decode pool's preview, the prefill leg, the decode leg
                prompt_hashes(ids, 16)

        stages: dict[str, Callable[[], object]] = {
            "parse_chat": lambda b=chat_body: parse_body(ChatCompletionRequest, b),
            "parse_text": lambda b=text_body: parse_body(CompletionRequest, b),
            "parse_ids": lambda b=ids_body: parse_body(CompletionRequest, b),
            "render": lambda r=chat_req: pre.chat_prompt_text(r),
            "check_ids": lambda r=req: pre.completion_prompt_ids(r),
            "encode": lambda t=text: pre._encode(t, True),
            "build": lambda r=req, c=checked: pre.engine_request(r, c, "req-1"),
            "legs": legs,
            "pack_legs": pack_legs,
            "hash": lambda c=checked: sequence_hashes(block_hashes(c, 16)),
            "route_x3": route_x3,
        }
        row = {name: best_us(fn, iterations, repeats) for name, fn in stages.items()}
        row["pack_legs"] -= row["legs"]  # pack_legs builds the legs too: report msgpack alone
        out[str(n)] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tokens", default="1024,3072,8192")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline-src", help="another checkout's src directory to compare with")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # subprocess mode
    args = ap.parse_args()
    tokens = [int(t) for t in args.tokens.split(",")]
    if args.json:
        print(json.dumps(measure(tokens, args.iterations, args.repeats)))
        return
    # Both trees measured in subprocesses, alternately, `--rounds` times; each figure is the
    # best over the rounds, so a burst of load on the shared machine hits both alike.
    trees = [("this", None)] + ([("base", args.baseline_src)] if args.baseline_src else [])
    best: dict[str, dict[str, dict[str, float]]] = {}
    for _ in range(args.rounds):
        for label, src in trees:
            env = dict(os.environ)
            if src is not None:
                env["PYTHONPATH"] = str(Path(src).resolve())
            cmd = [sys.executable, __file__, "--json", "--tokens", args.tokens]
            cmd += ["--iterations", str(args.iterations), "--repeats", str(args.repeats)]
            got = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True).stdout)
            if label not in best:
                best[label] = got
            else:
                for n, row in got.items():
                    for stage, us in row.items():
                        best[label][n][stage] = min(best[label][n][stage], us)
    ours, base = best["this"], best.get("base")
    print(f"CPU us per call, best of {args.rounds} rounds x {args.repeats} x {args.iterations}")
    head = f"{'stage':<12}" + "".join(f"{n + ' tok':>26}" for n in ours)
    print(head)
    sub = "baseline -> this (ratio)" if base else "this"
    print(f"{'':<12}" + "".join(f"{sub:>26}" for _ in ours))
    for stage in (*STAGES, "ids total"):
        cells = []
        for n, row in ours.items():
            if stage == "ids total":
                now = sum(row[s] for s in ON_LOOP_IDS)
                was = sum(base[n][s] for s in ON_LOOP_IDS) if base else None
            else:
                now, was = row[stage], (base[n][stage] if base else None)
            if was is None:
                cells.append(f"{now:>26.1f}")
            else:
                cells.append(f"{f'{was:.1f} -> {now:.1f} ({now / was:.2f}x)':>26}")
        print(f"{stage:<12}" + "".join(cells))


if __name__ == "__main__":
    main()
