"""The toy model and prefix cache the engine fakes share: `fake_sglang` (SGLang's Python engine
API) and `fake_trtllm` (TensorRT-LLM's `llmapi`) build on them, for adapter tests without a GPU.

The "model" is deterministic: each next token is the previous one + 1 (mod `VOCAB`).
"""

from __future__ import annotations

VOCAB = 1000
EOS = 2


class FakePrefixCache:
    """Full blocks seen before, keyed by their token prefix (what a real engine reuses)."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.seen: set[tuple[int, ...]] = set()

    def lookup_and_store(self, prompt: list[int]) -> tuple[int, list[list[int]]]:
        """(cached prompt tokens, newly stored blocks) for `prompt`."""
        bs, cached, new = self.block_size, 0, []
        for i in range(len(prompt) // bs):
            prefix = tuple(prompt[: (i + 1) * bs])
            if prefix in self.seen and cached == i * bs:
                cached += bs
            elif prefix not in self.seen:
                self.seen.add(prefix)
                new.append(list(prefix[-bs:]))
        return cached, new


def next_token(previous: int) -> int:
    return (previous + 1) % VOCAB
