"""ConfigMap volumes under `dynamo serve`: the file's ConfigMaps become run-dir directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynamo.deploy.serve import ServeConfig, plan, prepare_run_dir
from dynamo.runtime.errors import ConfigError

GRAPH = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: profile}
data: {a.json: '{"x": 1}'}
---
apiVersion: nvidia.com/v1alpha1
kind: DynamoGraphDeployment
metadata: {name: g}
spec:
  services:
    Planner:
      componentType: planner
      envs: [{name: PROFILE, value: /mnt/p/a.json}]
      extraPodSpec:
        volumes:
        - {name: p, configMap: {name: profile}}
        - {name: other, configMap: {name: elsewhere}}
        mainContainer:
          command: [python3, -m, dynamo.planner]
          args: [--profile-results-dir, /mnt/p, --x=/mnt/p/a.json, --y, /mnt/other, /mnt/pp]
          volumeMounts:
          - {name: p, mountPath: /mnt/p}
          - {name: other, mountPath: /mnt/other}
"""


def test_mount_paths_point_at_the_run_dir(tmp_path: Path) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH)
    p = plan(ServeConfig(file=str(graph), run_dir=str(tmp_path / "run")))
    local = tmp_path / "run" / "configmaps" / "profile"
    (planner,) = p.specs
    assert planner.args == (
        "--profile-results-dir",
        str(local),
        f"--x={local}/a.json",
        "--y",
        "/mnt/other",  # not a ConfigMap of this file: left as a pod would see it
        "/mnt/pp",  # only the mount path itself or paths below it
    )
    assert planner.env["PROFILE"] == f"{local}/a.json"
    prepare_run_dir(p)
    assert (local / "a.json").read_text() == '{"x": 1}'


def test_a_configmap_without_data_mapping_is_refused(tmp_path: Path) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH.replace("data: {a.json: '{\"x\": 1}'}", "data: [1]"))
    with pytest.raises(ConfigError, match=r"a ConfigMap needs metadata\.name and a data mapping"):
        plan(ServeConfig(file=str(graph), run_dir=str(tmp_path / "run")))
