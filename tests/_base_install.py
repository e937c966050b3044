"""Run pydynamo as a plain `pip install pydynamo` would: only the distributions that
`[project].dependencies` pulls in (transitively) can be imported.

The test venv holds every extra, so a child Python wraps each meta-path finder so that none
finds a top-level module of an installed distribution outside that set: importing one raises
Python's own ModuleNotFoundError and `importlib.util.find_spec` returns None, as for an absent
package.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
BLOCKED_ENV = "DYN_TEST_BLOCKED_IMPORTS"

# `python -c BOOTSTRAP MODULE ARGS...`: block non-base imports, then run MODULE as __main__.
BOOTSTRAP = f"""
import json, os, runpy, sys
blocked = frozenset(json.loads(os.environ.pop({BLOCKED_ENV!r})))
class Hiding:
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, attr):
        return getattr(self.finder, attr)
sys.meta_path[:] = [Hiding(finder) for finder in sys.meta_path]
for name in [n for n in sys.modules if n.partition(".")[0] in blocked]:
    del sys.modules[name]  # imported by a .pth file before the finders were wrapped
module, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def normalize(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def declared_dependencies() -> list[Requirement]:
    """`[project].dependencies` of pyproject.toml, markers applying to this interpreter."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def _requires(req: Requirement) -> Iterable[Requirement]:
    try:
        requires = metadata.distribution(req.name).requires or []
    except metadata.PackageNotFoundError:
        raise AssertionError(
            f"{req.name} (a base dependency) is not installed: pip install -e '.[dev]'"
        ) from None
    extras = {"", *req.extras}
    for line in requires:
        dep = Requirement(line)
        if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in extras):
            yield dep


@cache
def base_distributions() -> frozenset[str]:
    """Normalized names of the distributions a plain install of pydynamo brings."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = declared_dependencies()
    while todo:
        req = todo.pop()
        key = (normalize(req.name), frozenset(req.extras))
        if key not in seen:
            seen.add(key)
            todo.extend(_requires(req))
    return frozenset(name for name, _ in seen)


def import_names(dists: Iterable[str]) -> frozenset[str]:
    """Top-level import names provided by the distributions `dists`."""
    wanted = {normalize(d) for d in dists}
    return frozenset(
        module
        for module, owners in metadata.packages_distributions().items()
        if any(normalize(owner) in wanted for owner in owners)
    )


@cache
def blocked_imports() -> frozenset[str]:
    """Top-level modules installed here that a plain install of pydynamo would not have."""
    installed = set(metadata.packages_distributions())
    base = import_names(base_distributions()) | {"dynamo"}
    return frozenset(installed - base - set(sys.stdlib_module_names))


def run_base_install(
    module: str, args: Sequence[str] = (), *, env: Mapping[str, str] | None = None,
    timeout_s: float = 120.0,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """`python -m module args...` as on a plain install (see the module docstring)."""
    child_env = {**os.environ, **(env or {}), BLOCKED_ENV: json.dumps(sorted(blocked_imports()))}
    return subprocess.run(
        [sys.executable, "-c", BOOTSTRAP, module, *args],
        cwd=ROOT,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
