"""The planner benchmarks' load shapes (benchmarks/_load_shapes.py): misses per phase."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _load_shapes import SHAPES, format_misses, misses_by_phase


def test_misses_are_counted_in_the_phase_their_request_arrived_in() -> None:
    phases = ((10.0, 1.0, 1.0), (10.0, 1.0, 4.0), (5.0, 8.0, 8.0))
    arrived = [1.0, 9.9, 10.0, 15.0, 19.9, 20.0, 24.0, 30.0]  # the last one after the end
    missed = [False, True, False, True, True, True, True, False]
    rows = misses_by_phase(arrived, missed, phases)
    assert rows == [("x1", 2, 1), ("x1->x4", 3, 2), ("x8", 3, 2)]
    assert format_misses(rows) == "x1 1/2, x1->x4 2/3, x8 2/3"


def test_a_sinusoid_reads_as_its_rises_and_falls() -> None:
    phases = SHAPES["sinusoid"]  # 10 s pieces, 3 cycles
    rows = misses_by_phase([0.0], [True], phases)
    assert [label for label, _, _ in rows] == ["x1->x4", "x4->x1"] * 3
    assert rows[0][1:] == (1, 1)


def test_the_burst_alone_is_the_issue_traces_x8_burst_after_a_settled_x1() -> None:
    burst = SHAPES["burst"]
    assert (10, 8, 8) in SHAPES["ramp+burst"] and burst[1] == (10, 8, 8)
    assert burst[0][1:] == (1, 1) and burst[-1][1:] == (1, 1)
