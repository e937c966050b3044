"""Benchmarks run from a clone: nothing under benchmarks/, docs/ or the README points outside the
repository (the clients, traces and peer scripts it once read from `../shared`), and every
`benchmarks/...` path the benchmark docs name exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUTSIDE = re.compile(r"\.\./shared|/work/shared|shared/(bench|traces)")

# Files of other branches (#19: router-defaults, http-workers) that still name ../shared; the
# merge replaces those lines and empties this set (the test fails until it is emptied).
PENDING_OTHER_BRANCHES: set[str] = set()


def _documents() -> list[Path]:
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "benchmarks", "docs"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return [REPO / "README.md", *(REPO / p for p in tracked if not p.endswith((".xz", ".gz")))]


def test_no_benchmark_or_doc_points_at_the_shared_directory() -> None:
    offenders = {
        str(path.relative_to(REPO))
        for path in _documents()
        if path.is_file() and OUTSIDE.search(path.read_text(errors="replace"))
    }
    assert offenders == PENDING_OTHER_BRANCHES, (
        "files naming ../shared (the clients, traces and peer scripts are in benchmarks/): "
        f"{sorted(offenders - PENDING_OTHER_BRANCHES)}; fixed but still listed as pending: "
        f"{sorted(PENDING_OTHER_BRANCHES - offenders)}"
    )


def test_every_benchmarks_path_the_docs_name_exists() -> None:
    docs = [REPO / "benchmarks" / "README.md", REPO / "docs" / "benchmarks.md"]
    named = {m for doc in docs for m in re.findall(r"benchmarks/[\w./-]+\w", doc.read_text())}
    missing = sorted(p for p in named if not (REPO / p).exists())
    assert named and not missing, f"named in the benchmark docs, not in the repository: {missing}"
