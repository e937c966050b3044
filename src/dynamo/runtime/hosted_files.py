"""Files this process hosts for its peers, addressed by the sha256 of their content.

A worker puts its model's tokenizer and config files here; the status server serves them at
`/v1/model-files/{sha256}`, so a frontend with no shared filesystem can fetch them. Only what
was added is served (never a path), and the content is held in memory: the files stay
available even if the model directory moves or vanishes after registration.
"""

from __future__ import annotations

import hashlib
import re

FILES_ROUTE = "/v1/model-files/{sha256}"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_sha256_hex(value: str) -> bool:
    return bool(_SHA256_HEX.match(value))


def file_url(base_url: str, sha256: str) -> str:
    """Where a peer whose status server is at `base_url` serves the file `sha256`."""
    return base_url.rstrip("/") + FILES_ROUTE.format(sha256=sha256)


class HostedFiles:
    """sha256 -> content; adding the same content twice keeps one copy."""

    def __init__(self) -> None:
        self._by_hash: dict[str, bytes] = {}

    def add(self, data: bytes) -> str:
        digest = sha256_hex(data)
        self._by_hash.setdefault(digest, data)
        return digest

    def get(self, sha256: str) -> bytes | None:
        return self._by_hash.get(sha256)

    def __len__(self) -> int:
        return len(self._by_hash)
