"""`python -m dynamo.profiler` / `dynamo profile` end to end in rapid mode: every output, read
back by the planner and validated against our CRD schema; failures end in one stderr line."""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from dynamo.cli import main as cli_main
from dynamo.deploy.graph import load_graph
from dynamo.deploy.schema import json_schema
from dynamo.planner.profile import load_profile
from dynamo.profiler.main import EXIT_ERROR, EXIT_SLA_UNMET, main

DGDR = {
    "apiVersion": "nvidia.com/v1alpha1",
    "kind": "DynamoGraphDeploymentRequest",
    "metadata": {"name": "tiny"},
    "spec": {
        "model": "Qwen/Qwen3-0.6B",
        "backend": "vllm",
        "useMocker": True,
        "profilingConfig": {
            "config": {
                "sla": {"isl": 3000, "osl": 150, "ttft": 300, "itl": 25},
                "hardware": {"minNumGpusPerEngine": 1, "maxNumGpusPerEngine": 2},
                "sweep": {
                    "prefillInterpolationGranularity": 4,
                    "decodeInterpolationGranularity": 3,
                },
                "engine": {"maxContextLength": 6000},
                "planner": {"plannerLoadPredictor": "constant"},
            }
        },
    },
}


def _small(doc: dict = DGDR) -> dict:
    """A cheaper request: short prompts, one TP degree, few points."""
    small = json.loads(json.dumps(doc))
    config = small["spec"]["profilingConfig"]["config"]
    config["sla"].update(isl=500, osl=20)
    config["hardware"]["maxNumGpusPerEngine"] = 1
    config["sweep"] = {"prefillInterpolationGranularity": 2, "decodeInterpolationGranularity": 2}
    config["engine"]["maxContextLength"] = 1000
    return small


def _write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "dgdr.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_rapid_writes_every_output_the_planner_and_the_crd_accept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["--config", str(_write(tmp_path, DGDR)), "--output-dir", str(out)]) == 0
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {
        "selected_prefill_interpolation/raw_data.npz",
        "selected_decode_interpolation/raw_data.npz",
        "prefill_raw_data.json",
        "decode_raw_data.json",
        "config_with_planner.yaml",
        "mocker_config_with_planner.yaml",
        "profiling_results.json",
    } <= names
    with zipfile.ZipFile(out / "selected_decode_interpolation" / "raw_data.npz") as z:
        assert sorted(z.namelist()) == [
            "max_kv_tokens.npy",
            "x_kv_usage.npy",
            "y_context_length.npy",
            "z_itl.npy",
            "z_thpt_per_gpu.npy",
        ]

    profile = load_profile(out)
    assert "raw_data.npz" in profile.source
    assert len(profile.prefill.isl) == 4 and profile.prefill.isl[0] == 128
    assert 60 < profile.prefill.ttft(3000) < 75  # the timing model's 65.8 ms + 4.9, interpolated
    assert profile.decode.max_kv_tokens == 16384 * 64
    assert profile.decode.best_throughput_per_gpu(25.0, 3075)[1]

    results = json.loads((out / "profiling_results.json").read_text())
    assert results["meetsSla"] is True
    assert results["selected"]["prefill"]["tensorParallelSize"] == 1
    assert results["selected"]["decode"]["itlMs"] <= 25
    assert results["servingOverhead"] == {"fixedMs": 2.3, "per1kTokensMs": 0.85}
    at_sla = results["sweep"]["decodeAtSla"]
    assert [d["gpus"] for d in at_sla] == [1, 2] and all(d["itl_ms"] <= 25 for d in at_sla)
    assert len(results["sweep"]["prefill"]) == 2 and len(results["sweep"]["decode"]) == 6

    schema = json_schema("DynamoGraphDeployment")
    for name, planner_backend in (
        ("config_with_planner.yaml", "vllm"),
        ("mocker_config_with_planner.yaml", "mocker"),
    ):
        configmap, dgd = yaml.safe_load_all((out / name).read_text())
        assert configmap["kind"] == "ConfigMap"
        assert configmap["metadata"]["name"] == "planner-profile-data"
        assert json.loads(configmap["data"]["prefill_raw_data.json"]) == json.loads(
            (out / "prefill_raw_data.json").read_text()
        )
        assert len(json.dumps(configmap)) < 1024 * 1024
        jsonschema.validate(dgd, schema)
        graph = load_graph(out / name)
        assert graph.name == "tiny"
        planner = graph.spec.services["Planner"].extra_pod_spec.main_container
        args = planner.args
        assert args[args.index("--backend") + 1] == planner_backend
        assert args[args.index("--profile-results-dir") + 1] == "/workspace/profiling_results"
        assert args[-2:] == ["--load-predictor", "constant"]
    captured = capsys.readouterr()
    # the engine's 65.8 ms + the serving stack's 2.3 ms + 0.85 ms x 3 (overhead.MEASURED)
    assert captured.out.startswith("prefill TP1: TTFT 70.7 ms")
    plots = ["prefill_performance.png", "decode_performance.png"]
    plots += ["prefill_ttft_interpolation.png", "decode_itl_interpolation.png"]
    if importlib.util.find_spec("matplotlib"):  # the profiler extra
        for name in plots:
            assert (out / name).read_bytes().startswith(b"\x89PNG")
    else:
        assert "profiler: no plots: matplotlib is not installed" in captured.err
        assert not any((out / name).exists() for name in plots)


def test_dynamo_profile_maps_onto_the_profiler(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert cli_main(["profile", "-f", str(_write(tmp_path, _small())), "-o", str(out)]) == 0
    assert (out / "profiling_results.json").is_file()


def _strict(ttft: float, itl: float) -> dict:
    spec = json.loads(json.dumps(DGDR))
    spec["spec"]["profilingConfig"]["config"]["sweep"]["decodeInterpolationGranularity"] = 2
    spec["spec"]["profilingConfig"]["config"]["sla"].update(ttft=ttft, itl=itl)
    return spec


def test_an_unmeetable_sla_exits_non_zero_with_the_best_achievable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    dgdr = str(_write(tmp_path, _strict(10, 2)))
    code = main(["-f", dgdr, "-o", str(out), "--serving-overhead", "0"])  # the engine alone
    assert code == EXIT_SLA_UNMET
    err = capsys.readouterr().err
    assert "rapid TTFT = the engine's + the serving stack's (0 ms + 0 ms per 1000" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("profiler: no engine configuration meets the SLA: TTFT target 10 ms")
    assert "best achievable 36.6 ms (TP2)" in last and "ITL target 2 ms" in last
    assert json.loads((out / "profiling_results.json").read_text())["meetsSla"] is False
    assert not (out / "config_with_planner.yaml").exists()

    closest = main(["-f", str(tmp_path / "dgdr.yaml"), "-o", str(out), "--deploy-closest"])
    assert closest == 0 and (out / "config_with_planner.yaml").is_file()


def test_bad_input_is_one_line_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["-f", str(_write(tmp_path, _strict(-1, 25))), "-o", str(tmp_path / "o")])
    assert code == EXIT_ERROR
    assert capsys.readouterr().err == "python -m dynamo.profiler: sla.ttft: must be > 0, got -1\n"

    assert main(["-f", str(tmp_path / "missing.yaml")]) == EXIT_ERROR
    assert "cannot read" in capsys.readouterr().err

    dgdr = str(tmp_path / "dgdr.yaml")
    assert main(["-f", dgdr, "--serving-overhead", "1,2,3"]) == EXIT_ERROR
    assert capsys.readouterr().err == (
        "python -m dynamo.profiler: --serving-overhead: expected FIXED_MS[,PER_1K_TOKENS_MS] "
        "with values >= 0 (e.g. 2.3,0.85), got '1,2,3'\n"
    )


@pytest.mark.parametrize("target", [[], ["--deploy-target", "local"]])
def test_thorough_of_a_real_engine_on_this_machine_fails_at_once(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    target: list[str],
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # auto: local
    doc = json.loads(json.dumps(DGDR))
    doc["spec"]["useMocker"] = False
    config = str(_write(tmp_path, doc))
    code = main(["-f", config, "-o", str(tmp_path / "o"), "--mode", "thorough", *target])
    assert code == EXIT_ERROR
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--mode thorough with --deploy-target local" in last
    assert "needs spec.useMocker: true" in last and "--deploy-target kubernetes" in last
    assert not (tmp_path / "o").exists()

    dgdr = str(tmp_path / "dgdr.yaml")
    code = main(["-f", dgdr, "--mode", "thorough", "--serving-overhead", "2"])
    assert code == EXIT_ERROR
    assert capsys.readouterr().err == (
        "python -m dynamo.profiler: --serving-overhead is rapid mode's model of the serving "
        "stack; --mode thorough measures the stack itself\n"
    )


def test_a_base_dgd_gets_the_chosen_tp(tmp_path: Path) -> None:
    doc = _small()
    base = Path(__file__).resolve().parents[2] / "examples" / "sglang" / "disagg.yaml"
    doc["spec"]["backend"] = "sglang"
    doc["spec"]["profilingConfig"]["config"]["engine"]["config"] = str(base)
    out = tmp_path / "out"
    assert main(["-f", str(_write(tmp_path, doc)), "-o", str(out)]) == 0
    graph = load_graph(out / "config_with_planner.yaml")
    assert set(graph.spec.services) == {
        "Frontend",
        "SGLangDecodeWorker",
        "SGLangPrefillWorker",
        "Planner",
    }
    prefill = graph.spec.services["SGLangPrefillWorker"]
    assert "--tp 1" in prefill.extra_pod_spec.main_container.args[0]
    assert prefill.resources.limits.gpu == "1"
