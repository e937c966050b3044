"""`--dyn-tool-call-parser` / `--dyn-reasoning-parser` on `python -m dynamo.mocker`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dynamo.mocker.main import parse_args
from dynamo.runtime.errors import ConfigError


def test_flags_and_env_reach_the_parser_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DYN_TOOL_CALL_PARSER", raising=False)
    monkeypatch.setenv("DYN_REASONING_PARSER", "deepseek_r1")
    _, _, parsers = parse_args(["--model-path", "x", "--dyn-tool-call-parser", "hermes"])
    assert parsers.card_fields() == {
        "tool_call_parser": "hermes",
        "reasoning_parser": "deepseek_r1",
    }


def test_no_flags_no_parsers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DYN_TOOL_CALL_PARSER", raising=False)
    monkeypatch.delenv("DYN_REASONING_PARSER", raising=False)
    _, _, parsers = parse_args(["--model-path", "x"])
    assert parsers.card_fields() == {"tool_call_parser": None, "reasoning_parser": None}


def test_an_unknown_env_name_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYN_TOOL_CALL_PARSER", "hermez")
    with pytest.raises(ConfigError, match="DYN_TOOL_CALL_PARSER: 'hermez' is not one of"):
        parse_args(["--model-path", "x"])


@pytest.mark.parametrize(
    ("flag", "known"),
    [("--dyn-tool-call-parser", "hermes"), ("--dyn-reasoning-parser", "deepseek_r1")],
)
def test_an_unknown_name_exits_2_listing_the_known_ones(flag: str, known: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DYN_")}
    proc = subprocess.run(
        [sys.executable, "-m", "dynamo.mocker", "--model-path", "dynamo:tinymodel", flag, "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2
    assert f"{flag}: invalid choice: 'nope'" in proc.stderr
    assert known in proc.stderr
