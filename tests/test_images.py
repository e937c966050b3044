"""The images (Dockerfile, docker/Dockerfile.*) can be built from this repository and run
what the charts and examples ask of them. Base images cannot be pulled here, so this reads
the Dockerfiles; hadolint lints them in scripts/test.sh."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from _base_install import ROOT, import_names
from dynamo.cli import build_parser
from dynamo.deploy.builder import DEFAULT_COMMANDS

DOCKERFILES = [ROOT / "Dockerfile", *sorted((ROOT / "docker").glob("Dockerfile*"))]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CHART = ROOT / "deploy" / "helm" / "dynamo-platform"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuations joined, comment lines dropped."""
    result, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        if line.strip().startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, rest = full.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def words(arguments: str) -> list[str]:
    """Exec-form (JSON array) or shell-form words."""
    return json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)


def context_sources(dockerfile: Path) -> list[str]:
    """What COPY/ADD take from the build context (not from another stage)."""
    sources = []
    for keyword, arguments in instructions(dockerfile):
        if keyword not in ("COPY", "ADD"):
            continue
        args = words(arguments)
        flags = [a for a in args if a.startswith("--")]
        if any(f.startswith("--from=") for f in flags):
            continue
        sources += [a for a in args if not a.startswith("--")][:-1]
    return sources


def dockerignore_regexes() -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, regex) per .dockerignore line, in order (the last match decides)."""
    path = ROOT / ".dockerignore"
    rules = []
    for line in path.read_text().splitlines() if path.exists() else []:
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        exception = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*/|/\*\*$|\*\*|\*|\?)", pattern):
            regex += {
                "**/": "(?:.*/)?",
                "/**": "(?:/.*)?",
                "**": ".*",
                "*": "[^/]*",
                "?": "[^/]",
            }.get(part, re.escape(part))
        rules.append((exception, re.compile(regex)))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether `path` (relative to the context) is left out: it or a parent dir matches."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for exception, regex in rules:
        if any(regex.fullmatch(c) for c in candidates):
            verdict = not exception
    return verdict


def tracked_files(source: str) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--", source], cwd=ROOT, capture_output=True, check=True
    ).stdout
    return [f for f in out.decode().split("\0") if f]


def runnable_module(module: str) -> bool:
    """`python -m module` works once the package is installed: a package with __main__.py,
    or a module with a `__main__` block, inside src/ (all of it is packaged)."""
    base = ROOT / "src" / Path(*module.split("."))
    if (base / "__main__.py").is_file():
        return True
    file = base.with_suffix(".py")
    return file.is_file() and 'if __name__ == "__main__":' in file.read_text()


def manifest_texts() -> dict[str, str]:
    """The charts' templates, values and CI values and every example manifest (not the
    generated CRD schemas: prose, no commands)."""
    paths = [
        *(ROOT / "deploy" / "helm").glob("*/templates/*"),
        *(ROOT / "deploy" / "helm").glob("*/values.yaml"),
        *(ROOT / "deploy" / "helm").glob("*/ci/*.yaml"),
        *(ROOT / "examples").rglob("*.yaml"),
    ]
    paths = [p for p in paths if "CustomResourceDefinition" not in p.read_text()]
    return {str(p.relative_to(ROOT)): p.read_text() for p in sorted(paths)}


def commands_named(text: str) -> tuple[set[str], set[str]]:
    """(modules of `python3 -m dynamo.X`, subcommands of `dynamo X`) in a manifest, in shell
    form or as a YAML/JSON list."""
    flat = re.sub(r"[\"',\[\]]", " ", text)
    modules = set(re.findall(r"\bpython[0-9.]*\s+-m\s+(dynamo(?:\.\w+)*)", flat))
    subcommands = set(re.findall(r"(?:^|[\s:#])dynamo\s+([a-z][\w-]*)", flat, re.MULTILINE))
    return modules, subcommands


def built_images() -> dict[str, Path]:
    """Image name:tag -> the Dockerfile whose header says `docker build ... -t NAME:TAG`."""
    images = {}
    for dockerfile in DOCKERFILES:
        for tag in re.findall(r"^#\s+docker build .*-t (\S+)", dockerfile.read_text(), re.M):
            images[tag] = dockerfile
    return images


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_context_path_exists_and_is_not_dockerignored(dockerfile: Path) -> None:
    rules = dockerignore_regexes()
    sources = context_sources(dockerfile)
    assert sources  # the parser found the COPY lines
    for source in sources:
        assert list(ROOT.glob(source)), f"{dockerfile.name}: COPY {source}: not in the repo"
        files = tracked_files(source)
        assert files, f"{dockerfile.name}: COPY {source}: no tracked file"
        assert [f for f in files if ignored(f, rules)] == [], f"{source} is in .dockerignore"


def test_dockerignore_keeps_caches_out_and_sources_in() -> None:
    rules = dockerignore_regexes()
    assert ignored(".git/config", rules)
    assert ignored("src/dynamo/__pycache__/cli.cpython-311.pyc", rules)
    assert ignored("src/pydynamo.egg-info/PKG-INFO", rules)
    assert ignored(".venv-vllm/bin/python", rules)
    assert not ignored("src/dynamo/cli.py", rules)
    assert not ignored("pyproject.toml", rules)


def test_what_git_ignores_here_stays_out_of_the_build_context() -> None:
    """Venvs, caches, egg-info a checkout grows (test.sh makes .venv, .venv-vllm and
    .venv-sglang-*, benchmarks use .venv-peer)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    present = [p.rstrip("/") for p in out.decode().split("\0") if p]
    rules = dockerignore_regexes()
    assert [p for p in present if not ignored(p, rules)] == []


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_image_installs_this_package_and_runs_one_of_its_modules(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    runs = " ".join(args for keyword, args in steps if keyword == "RUN")
    assert re.search(r"pip install [^&]*(\"?\.|pydynamo)\[operator\]", runs)
    (entrypoint,) = [words(args) for keyword, args in steps if keyword == "ENTRYPOINT"]
    (cmd,) = [words(args) for keyword, args in steps if keyword == "CMD"]
    argv = entrypoint + cmd
    assert argv[:2] == ["python3", "-m"]
    assert runnable_module(argv[2]), argv


def test_the_operator_extra_brings_what_the_operator_imports() -> None:
    extra = PROJECT["optional-dependencies"]["operator"]
    assert "kopf" in import_names(re.split(r"[<>=!~;\[ ]", r)[0] for r in extra)


def test_manifests_name_only_commands_the_image_installs() -> None:
    (sub,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    subcommands = set(sub.choices)
    assert PROJECT["scripts"] == {"dynamo": "dynamo.cli:main"}
    found_modules: set[str] = set()
    for name, text in manifest_texts().items():
        modules, commands = commands_named(text)
        found_modules |= modules
        assert {m for m in modules if not runnable_module(m)} == set(), name
        assert commands - subcommands == set(), name
    assert {"dynamo.operator", "dynamo.frontend", "dynamo.mocker", "dynamo.vllm"} <= found_modules


def test_images_the_manifests_name_are_built_here_at_the_project_version() -> None:
    built = built_images()
    assert set(built) == {
        f"pydynamo/{name}:{PROJECT['version']}"
        for name in ("runtime", "vllm-runtime", "sglang-runtime", "trtllm-runtime")
    }
    named = set()
    for text in manifest_texts().values():
        named |= set(re.findall(r"\bimage:\s*(pydynamo/\S+)", text))
    assert named and named <= set(built)
    values = yaml.safe_load((CHART / "values.yaml").read_text())["dynamo-operator"]["image"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    operator_image = f"{values['repository']}:{values['tag'] or chart['appVersion']}"
    assert built[operator_image] == ROOT / "Dockerfile"


def test_the_chart_runs_the_operator_module() -> None:
    deployment = (CHART / "templates" / "operator-deployment.yaml").read_text()
    assert 'command: ["python3", "-m", "dynamo.operator"]' in deployment
    assert runnable_module("dynamo.operator")


@pytest.mark.parametrize("component", sorted(DEFAULT_COMMANDS))
def test_default_service_commands_run_a_module_of_the_image(component: str) -> None:
    command = DEFAULT_COMMANDS[component]
    assert command[:2] == ("python3", "-m")
    assert runnable_module(command[2])
