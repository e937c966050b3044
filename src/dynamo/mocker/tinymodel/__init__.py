"""A tiny real HF tokenizer directory shipped with the package, for offline examples and tests.

`tokenizer.json` (byte-level BPE, 2,048 ids; `<unk>`=0, `<s>`=1, `</s>`=2 = EOS),
`tokenizer_config.json` (with a chat template) and a Llama-style `config.json`; no weights.
Regenerate with `python -m dynamo.mocker.tinymodel.generate`.
"""

from __future__ import annotations

from pathlib import Path

TINY_MODEL_VOCAB_SIZE = 2048
TINY_MODEL_EOS_TOKEN_ID = 2
TINY_MODEL_SPECIAL_TOKEN_IDS = (0, 1, 2)


def tiny_model_path() -> str:
    """Directory of the tiny model (usable as `--model-path`)."""
    return str(Path(__file__).resolve().parent)
