"""Does HF `tokenizers` hold the GIL while it encodes? Measured, for each way of calling it.

    python benchmarks/tokenizer_gil.py [--prompts 16 --tokens 6000]

A second thread sleeps 0.5 ms in a loop and records how late it wakes up while the main thread
encodes: a call that holds the GIL delays every wake-up by up to one whole call (what an event
loop would suffer); a call that drops it lets the sleeper run on time. Also prints the time to
encode the prompts one by one, as one batch, and one by one from one thread per CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tokenizers import Tokenizer

from dynamo.mocker.tinymodel import tiny_model_path


def wakeup_delays_ms(work: Callable[[], object]) -> tuple[float, list[float]]:
    """(seconds `work` took, how late each 0.5 ms sleep of another thread woke, in ms)."""
    late: list[float] = []
    stop = threading.Event()

    def sleeper() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            time.sleep(0.0005)
            late.append(1000 * (time.perf_counter() - t0 - 0.0005))

    thread = threading.Thread(target=sleeper)
    thread.start()
    time.sleep(0.05)
    late.clear()
    t0 = time.perf_counter()
    work()
    took = time.perf_counter() - t0
    stop.set()
    thread.join()
    return took, sorted(late)


def best_of(n: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=6000, help="words (one token each)")
    parser.add_argument("--model-dir", default=tiny_model_path())
    args = parser.parse_args()

    path = Path(args.model_dir) / "tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    vocab = json.loads(path.read_text())["model"]["vocab"]
    words = sorted(w[1:] for w in vocab if w.startswith("\u0120") and w[1:].isalpha())
    rng = random.Random(1)
    texts = [
        " " + " ".join(rng.choice(words) for _ in range(args.tokens)) for _ in range(args.prompts)
    ]
    n_tokens = sum(len(tok.encode(t).ids) for t in texts)

    calls: dict[str, Callable[[], object]] = {
        "encode, one by one": lambda: [tok.encode(t).ids for t in texts],
        "encode_batch_fast([t]), one by one": lambda: [
            tok.encode_batch_fast([t])[0].ids for t in texts
        ],
        "encode_batch_fast(all)": lambda: tok.encode_batch_fast(texts),
    }
    print(f"{args.prompts} prompts, {n_tokens} tokens in all, {os.cpu_count()} CPUs")
    print(f"{'call':<36} {'us/token':>8} {'sleeper wakeups':>16} {'late p50 ms':>12} {'max':>7}")
    for name, work in calls.items():
        took, late = wakeup_delays_ms(work)
        print(
            f"{name:<36} {1e6 * took / n_tokens:>8.2f} {len(late):>16} "
            f"{statistics.median(late):>12.2f} {late[-1]:>7.2f}"
        )
    threads = len(os.sched_getaffinity(0))
    with ThreadPoolExecutor(threads) as pool:
        pooled = best_of(
            3, lambda: list(pool.map(lambda t: tok.encode_batch_fast([t])[0].ids, texts))
        )
    serial = best_of(3, calls["encode_batch_fast([t]), one by one"])
    print(f"one by one: {1000 * serial:.1f} ms; from {threads} threads: {1000 * pooled:.1f} ms")


if __name__ == "__main__":
    main()
