"""Scripted outputs for the mocker (`--canned-outputs FILE`), so tests see real model shapes.

The file is JSON Lines: `{"match": "<substring of the rendered prompt>", "text": "<output>"}`.
For each request the prompt's token ids are decoded (special tokens kept, so the match sees
the chat template's markup); the first line whose `match` occurs in it gives the output,
encoded with the model's tokenizer. A request no line matches gets the usual hashed tokens.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from dynamo.runtime.errors import ConfigError


@dataclass(frozen=True)
class CannedOutput:
    match: str
    text: str


def load_canned_outputs(path: str | Path) -> list[CannedOutput]:
    """Read and check the file; any bad line is a ConfigError naming it."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"--canned-outputs {path}: {exc.strerror or exc}") from exc
    out: list[CannedOutput] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"--canned-outputs {path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not JSON: {exc.msg}") from None
        if not isinstance(obj, dict) or set(obj) != {"match", "text"}:
            raise ConfigError(f'{where}: expected {{"match": "...", "text": "..."}}')
        match, text = obj["match"], obj["text"]
        if not isinstance(match, str) or not isinstance(text, str) or not text:
            raise ConfigError(f"{where}: match must be a string and text a non-empty string")
        out.append(CannedOutput(match, text))
    if not out:
        raise ConfigError(f"--canned-outputs {path}: no outputs in the file")
    return out


class CannedOutputs:
    """The scripts of one file, as token ids of one tokenizer."""

    def __init__(self, outputs: Sequence[CannedOutput], tokenizer: Tokenizer) -> None:
        self._outputs = list(outputs)
        self._tokenizer = tokenizer
        self._ids = [tokenizer.encode(o.text, add_special_tokens=False).ids for o in outputs]
        for o, ids in zip(self._outputs, self._ids, strict=True):
            if not ids:
                raise ConfigError(f"--canned-outputs: {o.text!r} encodes to no tokens")

    @classmethod
    def from_files(cls, path: str | Path, model_dir: Path) -> CannedOutputs:
        tokenizer_file = model_dir / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise ConfigError(f"--canned-outputs needs {tokenizer_file} to encode the outputs")
        return cls(load_canned_outputs(path), Tokenizer.from_file(str(tokenizer_file)))

    def script_for(self, prompt: Sequence[int]) -> list[int] | None:
        """The output token ids for this prompt, or None when no line matches."""
        text = self._tokenizer.decode(list(prompt), skip_special_tokens=False)
        for output, ids in zip(self._outputs, self._ids, strict=True):
            if output.match in text:
                return list(ids)
        return None
