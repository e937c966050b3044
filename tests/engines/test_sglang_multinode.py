"""SGLang ranks above 0 of a multi-node engine run schedulers only and never register. The
fake `ServerArgs` mirrors SGLang's `--nnodes/--node-rank/--dist-init-addr`; the engine
factory records how it was built (no multi-node SGLang runs on one CPU box)."""

from __future__ import annotations

import functools
import os
from types import SimpleNamespace
from typing import Any

import pytest

from dynamo.engines.sglang import parse_sglang_args
from dynamo.engines.sglang_multinode import NONBLOCKING_ENV, is_non_leader, run_non_leader_rank
from dynamo.runtime.errors import ConfigError
from dynamo.sglang import main as sglang_main
from dynamo.testing.fake_sglang import FakeServerArgs

MODEL = ["--model-path", "some/model"]
RANK1 = ["--nnodes", "2", "--node-rank", "1", "--dist-init-addr", "leader.example:29500"]


def _parse(argv: list[str]) -> Any:
    return parse_sglang_args(argv, server_args_cls=FakeServerArgs, resolve_model_path=False)


class RecordingEngine:
    built: list[dict[str, Any]] = []

    def __init__(self, *, server_args: Any) -> None:
        RecordingEngine.built.append(
            {"server_args": server_args, "nonblocking": os.environ.get(NONBLOCKING_ENV)}
        )


def test_rank_flags_parse() -> None:
    _, args, _ = _parse([*MODEL, *RANK1])
    assert (args.nnodes, args.node_rank, args.dist_init_addr) == (2, 1, "leader.example:29500")
    assert is_non_leader(args)
    _, leader, _ = _parse([*MODEL, "--nnodes", "2", "--node-rank", "0"])
    assert not is_non_leader(leader)


def test_a_non_leader_builds_a_blocking_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NONBLOCKING_ENV, "0")
    RecordingEngine.built.clear()
    _, args, _ = _parse([*MODEL, *RANK1])
    run_non_leader_rank(args, RecordingEngine)
    [built] = RecordingEngine.built
    assert built["server_args"] is args
    assert built["nonblocking"] is None  # SGLang keeps the rank alive while schedulers live


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--nnodes", "2", "--node-rank", "2"], r"--node-rank 2 is outside 0..1 \(--nnodes 2\)"),
        (["--nnodes", "2", "--node-rank", "1"], "--node-rank 1 needs --dist-init-addr HOST:PORT"),
    ],
)
def test_bad_rank_flags_are_refused(flags: list[str], message: str) -> None:
    _, args, _ = _parse([*MODEL, *flags])
    with pytest.raises(ConfigError, match=message):
        run_non_leader_rank(args, RecordingEngine)


def test_main_never_serves_a_non_leader(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse_to_serve(*_: Any, **__: Any) -> None:
        raise AssertionError("a non-leader rank must not start a runtime or register")

    RecordingEngine.built.clear()
    monkeypatch.setattr(sglang_main, "parse_sglang_args", functools.partial(_parse))
    monkeypatch.setattr(
        sglang_main, "import_sglang", lambda: SimpleNamespace(Engine=RecordingEngine)
    )
    monkeypatch.setattr(sglang_main, "serve_engine", refuse_to_serve)
    with pytest.raises(SystemExit) as exit_:
        sglang_main.main([*MODEL, *RANK1])
    assert exit_.value.code == 1
    assert "the SGLang schedulers of this node exited" in capsys.readouterr().err
    assert len(RecordingEngine.built) == 1
