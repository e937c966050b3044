"""Import the modules of an optional extra, or say in one line which extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from dynamo.runtime.errors import MissingExtraError


def import_extra(module: str, extra: str) -> ModuleType:
    """Import `module` (ours or a third party's) whose packages come with `pydynamo[extra]`.

    A missing package outside `dynamo` raises MissingExtraError naming the extra; a missing
    `dynamo` module is a broken install and propagates unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not missing or missing.partition(".")[0] == "dynamo":
            raise
        raise MissingExtraError(
            f"{missing} is not installed: pip install 'pydynamo[{extra}]'"
        ) from exc
