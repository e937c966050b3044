"""Host a model's tokenizer and config files on the worker's status server, for frontends.

The card lists each file by name, size and sha256 and names the status server; the content is
read once at registration and served from memory by hash (see `dynamo.runtime.hosted_files`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from dynamo.protocols.model_card import ModelCard, ModelFile
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.hosted_files import HostedFiles

# What a frontend needs to tokenize, template and stop; weights never travel this way.
MODEL_FILE_NAMES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
)


def add_model_files(hosted: HostedFiles, directory: Path) -> list[ModelFile]:
    """Add the model files `directory` has to `hosted` (blocking: reads and hashes them)."""
    refs = []
    for name in MODEL_FILE_NAMES:
        path = directory / name
        if path.is_file():
            data = path.read_bytes()
            refs.append(ModelFile(name=name, size_bytes=len(data), sha256=hosted.add(data)))
    return refs


async def host_model_files(
    runtime: DistributedRuntime, card: ModelCard, directory: str | Path
) -> ModelCard:
    """`card` listing the files of `directory`, which `runtime`'s status server now serves
    (started on a free port if `--system-port` is unset)."""
    refs = await asyncio.to_thread(add_model_files, runtime.hosted_files, Path(directory))
    if not refs:
        return card
    return card.model_copy(update={"files": refs, "files_url": await runtime.files_url()})
