"""benchmarks/worker_start.py: a real mocker process timed from spawn to registered."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from worker_start import one_round


@pytest.mark.timeout(180)
def test_a_mocker_is_timed_from_spawn_to_its_discovery_key() -> None:
    # two real mockers started together, each found by the pid in its discovery entry
    rounds = one_round(2, pycache=None)
    assert len(rounds) == 2
    for wall_s, cpu_s in rounds:
        assert wall_s > 0 and cpu_s > 0
