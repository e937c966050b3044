"""`dynamo.profiler.job`: the profiler's failure becomes the container's termination message
(one line), and its exit code the Job's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

RUN_LIMIT_S = 300  # a hang guard


def test_a_failed_profiler_leaves_its_last_line_in_the_termination_log(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    missing = tmp_path / "no-such-dgdr.yaml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dynamo.profiler.job",
            "--config",
            str(missing),
            "--output-dir",
            str(tmp_path / "out"),
            "--output-configmap",
            "dgdr-output-x",
            "--termination-log",
            str(log),
        ],
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT_S,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        check=False,
    )
    assert result.returncode != 0
    reason = log.read_text()
    assert reason.endswith("\n")
    assert reason.count("\n") == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    # the profiler's last line, then the job's copy of it
    assert lines[-1] == reason.strip()
    assert lines[-2] == reason.strip()
    assert not (tmp_path / "out" / "profiling_results.json").exists()
