"""A model directory with a production-sized `tokenizer.json`, built from the tiny model.

Real tokenizers are 2-10 MB; tests of how model files travel need one past any inline limit.
`write_big_model` copies the packaged tiny model, appends filler entries to its BPE vocabulary
until the file reaches the size asked for, and adds a special token `<|big|>` that the copy's
own `chat_template.jinja` puts before every message, so a frontend that loaded anything else
counts different prompt tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

from dynamo.mocker.tinymodel import tiny_model_path

BIG_TOKEN = "<|big|>"
BIG_TEMPLATE = (
    "{% for m in messages %}" + BIG_TOKEN + "{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}" + BIG_TOKEN + "assistant: {% endif %}"
)


def write_big_model(dest: Path, *, min_tokenizer_bytes: int = 3_000_000) -> int:
    """Write the model into `dest` (created); return the id of `BIG_TOKEN`."""
    src = Path(tiny_model_path())
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = json.loads((src / "tokenizer.json").read_text())
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    next_id = 1 + max([*vocab.values(), *(t["id"] for t in tokenizer["added_tokens"])])
    base = len(json.dumps(tokenizer))
    # An entry `"fillerzzzz000123qq…q": 12345, ` takes at least 60 bytes.
    for i in range(max(0, min_tokenizer_bytes - base) // 60 + 1):
        vocab[f"fillerzzzz{i:06d}" + "q" * 40] = next_id
        next_id += 1
    big_id = next_id
    tokenizer["added_tokens"].append(
        {
            "id": big_id,
            "content": BIG_TOKEN,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
    )
    (dest / "tokenizer.json").write_text(json.dumps(tokenizer))
    config = json.loads((src / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (dest / "tokenizer_config.json").write_text(json.dumps(config))
    (dest / "chat_template.jinja").write_text(BIG_TEMPLATE)
    model = json.loads((src / "config.json").read_text())
    model["vocab_size"] = big_id + 1
    (dest / "config.json").write_text(json.dumps(model))
    (dest / "generation_config.json").write_text(json.dumps({"eos_token_id": 2}))
    return big_id
