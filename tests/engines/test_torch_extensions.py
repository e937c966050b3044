"""A torchvision built for another torch (vllm-cpu pulls one in) is found before vLLM imports it:
`python -m dynamo.vllm` says in one line what to do and exits 2.

The broken package is simulated by a `torchvision` on the path whose import raises what the real
one raises against torch 2.13.0+cpu."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynamo.engines.torch_extensions import EXTENSIONS, broken_torch_extension
from dynamo.engines.vllm import import_vllm
from dynamo.runtime.errors import ConfigError

NMS_ERROR = "operator torchvision::nms does not exist"


@pytest.fixture(autouse=True)
def _forget_fake_packages() -> Iterator[None]:
    """A fake extension that imported stays in sys.modules: drop it after each test."""
    before = {name: sys.modules[name] for name in EXTENSIONS if name in sys.modules}
    yield
    for name in EXTENSIONS:
        if name in before:
            sys.modules[name] = before[name]
        else:
            sys.modules.pop(name, None)


def _fake_package(root: Path, name: str, body: str) -> Path:
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text(body)
    return root


@pytest.fixture
def broken_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = _fake_package(tmp_path / "site", "torchvision", f"raise RuntimeError({NMS_ERROR!r})\n")
    monkeypatch.syspath_prepend(str(root))
    return root


def test_a_torchvision_that_does_not_load_is_named_with_the_repair(
    broken_torchvision: Path,
) -> None:
    message = broken_torch_extension()
    assert message is not None
    assert message.startswith("torchvision ")
    assert f"({NMS_ERROR}), which breaks vLLM's import" in message
    assert f"-m pip uninstall -y {' '.join(EXTENSIONS)}" in message
    assert "scripts/install-vllm-cpu.sh" in message
    assert "\n" not in message


def test_an_extension_that_imports_is_not_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "site"
    for name in EXTENSIONS:
        _fake_package(root, name, "VERSION = 'works'\n")
    monkeypatch.syspath_prepend(str(root))
    assert broken_torch_extension() is None


def test_import_vllm_refuses_before_importing_vllm(broken_torchvision: Path) -> None:
    with pytest.raises(ConfigError, match=r"^torchvision .*operator torchvision::nms"):
        import_vllm()


def test_the_worker_says_what_to_do_in_one_line_and_exits_2(broken_torchvision: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(broken_torchvision), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-m", "dynamo.vllm", "--model", "HuggingFaceTB/SmolLM2-135M-Instruct"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("python -m dynamo.vllm: error: torchvision ")
    assert "pip uninstall -y torchvision torchaudio torchcodec" in lines[0]
