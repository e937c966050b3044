"""Cost of the output parsers per streamed token, beside the detokenizer's cost per token.

A model answer of reasoning, prose and tool calls (several families) is tokenized with the
bundled tiny tokenizer and fed token by token: through `TextStream.push` (what every request
pays) and then through `OutputParser` (reasoning + tool-call parser). Prints microseconds per
token and the parser / detokenizer ratio.

    .venv/bin/python benchmarks/output_parsers.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from tokenizers import Tokenizer

from dynamo.frontend.detokenize import TextStream
from dynamo.mocker.tinymodel import tiny_model_path
from dynamo.protocols.parsers.pipeline import OutputParser
from dynamo.protocols.parsers.registry import reasoning_parser, tool_call_parser

PROSE = "The weather in Paris is usually mild in spring, with showers and sunny spells. " * 4
CALL = '{"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2, 3], "unit": "c"}}'
OUTPUTS = {
    "hermes": f"Let me think. {PROSE}</think>\n\n{PROSE}"
    + f"<tool_call>\n{CALL}\n</tool_call>\n" * 3,
    "llama3_json": f"Thinking: {PROSE}</think>" + "<|python_tag|>" + "; ".join([CALL] * 3),
    "qwen3_coder": f"{PROSE}</think>\n"
    + (
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
        "</function>\n</tool_call>\n"
    )
    * 3,
}


def per_token_us(fn: Callable[[], object], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - began)
    return 1e6 * best / n


def detokenize(tok: Tokenizer, ids: list[int]) -> list[str]:
    stream = TextStream(tok, stop=[], prompt_ids=[])
    texts = [stream.push([i]) for i in ids]
    return [*texts, stream.finish()]


def parse(family: str, texts: list[str]) -> None:
    p = OutputParser(reasoning_parser("deepseek_r1"), tool_call_parser(family))
    for t in texts:
        p.feed(t)
    p.finish()
    if len(p.tool_calls) != 3:
        raise SystemExit(f"{family}: expected 3 calls, got {p.tool_calls}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    tok = Tokenizer.from_file(str(Path(tiny_model_path()) / "tokenizer.json"))
    print(f"{'family':<14}{'tokens':>8}{'detok us/tok':>14}{'parse us/tok':>14}{'ratio':>8}")
    for family, text in OUTPUTS.items():
        ids = tok.encode(text, add_special_tokens=False).ids
        texts = detokenize(tok, ids)
        d = per_token_us(partial(detokenize, tok, ids), len(ids), args.repeat)
        p = per_token_us(partial(parse, family, texts), len(ids), args.repeat)
        print(f"{family:<14}{len(ids):>8}{d:>14.2f}{p:>14.2f}{p / d:>8.2f}")


if __name__ == "__main__":
    main()
