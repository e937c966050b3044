"""A small byte-level BPE tokenizer and chat template for frontend tests (trained in ~1 s)."""

from __future__ import annotations

import random

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: {% endif %}"
)


def build_tokenizer() -> Tokenizer:
    rnd = random.Random(7)
    syllables = [a + b for a in "bcdfghjklmnprstvwz" for b in "aeiou"]
    words = sorted(
        {"".join(rnd.choice(syllables) for _ in range(rnd.randint(1, 3))) for _ in range(2000)}
    )
    words += ["hello", "world", "the", "cat", "sat", "on", "mat", "STOP", "END", "café", "日本"]
    corpus = [" ".join(rnd.choice(words) for _ in range(50)) for _ in range(400)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=1000,
            special_tokens=["<unk>", "<s>", "</s>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok
