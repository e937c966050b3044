"""scripts/ci-preflight.sh (run by scripts/test.sh before pytest): under CI=true a missing
etcd or NATS binary fails the run at once; elsewhere it warns and the tests that need it skip.
The missing binary is simulated with DYN_TEST_ETCD_BIN / DYN_TEST_NATS_BIN naming no file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PREFLIGHT = ROOT / "scripts" / "ci-preflight.sh"


def _preflight(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "CI"}
    return subprocess.run(
        [str(PREFLIGHT), sys.executable],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "name"), [("DYN_TEST_ETCD_BIN", "etcd"), ("DYN_TEST_NATS_BIN", "nats-server")]
)
def test_a_missing_server_fails_under_ci(variable: str, name: str, tmp_path: Path) -> None:
    result = _preflight(CI="true", **{variable: str(tmp_path / "not-installed")})
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"FAILED: missing {name} (pip install -e '.[dev]'" in result.stdout
    assert "FAILED: CI=true and a test prerequisite is missing" in result.stdout


def test_a_missing_server_only_warns_outside_ci(tmp_path: Path) -> None:
    result = _preflight(DYN_TEST_ETCD_BIN=str(tmp_path / "not-installed"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "== missing etcd (pip install -e '.[dev]'" in result.stdout
    assert "tests needing it will SKIP" in result.stdout


def test_a_missing_server_fails_a_test_that_needs_it_under_ci(tmp_path: Path) -> None:
    """The fixtures agree: under CI=true `etcd_server` fails the tests instead of skipping."""
    base = {k: v for k, v in os.environ.items() if k != "CI"}
    argv = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
    argv += ["tests/runtime/test_discovery_etcd.py"]
    missing = {"DYN_TEST_ETCD_BIN": str(tmp_path / "not-installed")}

    def run(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, env={**base, **missing, **env}, capture_output=True, text=True, timeout=120,
            cwd=ROOT, check=False,
        )  # fmt: skip

    strict, lax = run(CI="true"), run()
    assert strict.returncode == 1, strict.stdout
    assert "CI=true: a missing test server fails the run" in strict.stdout
    assert lax.returncode == 0, lax.stdout
    assert " skipped" in lax.stdout and "passed" not in lax.stdout
