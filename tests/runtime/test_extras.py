"""`import_extra`: a missing optional package becomes one MissingExtraError naming the extra."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dynamo.runtime.errors import ConfigError, MissingExtraError
from dynamo.runtime.extras import import_extra


def test_an_installed_module_is_returned() -> None:
    assert import_extra("json", "operator") is json


def test_a_missing_package_names_the_extra() -> None:
    with pytest.raises(MissingExtraError) as info:
        import_extra("no_such_package_xyz.sub", "operator")
    assert (
        str(info.value) == "no_such_package_xyz is not installed: pip install 'pydynamo[operator]'"
    )
    assert isinstance(info.value, ConfigError)


def test_a_module_whose_dependency_is_missing_names_that_dependency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "uses_missing_xyz.py").write_text("import missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError) as info:
        import_extra("uses_missing_xyz", "vllm")
    assert str(info.value) == (
        "missing_dependency_xyz is not installed: pip install 'pydynamo[vllm]'"
    )


def test_a_missing_dynamo_module_is_a_broken_install_not_an_extra() -> None:
    with pytest.raises(ModuleNotFoundError) as info:
        import_extra("dynamo.no_such_module", "operator")
    assert info.type is ModuleNotFoundError
    assert info.value.name == "dynamo.no_such_module"
