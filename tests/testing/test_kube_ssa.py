"""Field ownership of the fake API server: server-side apply and updates by other managers."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dynamo.testing.kube_ssa import (
    ApplyConflictError,
    Owners,
    leaves,
    read_owners,
    record_update,
    server_side_apply,
    write_owners,
)

OP = ("op", "Apply", "")


def deployment(image: str = "img:1", **env: str) -> dict[str, Any]:
    container = {
        "name": "main",
        "image": image,
        "args": ["a", "b"],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "ports": [{"name": "http", "containerPort": 8000}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ns", "labels": {"app": "web"}},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [container]}}},
    }


def stored(obj: dict[str, Any], owners: Owners) -> dict[str, Any]:
    """`obj` as the server keeps it: with its managedFields."""
    out = copy.deepcopy(obj)
    out["metadata"]["managedFields"] = write_owners(owners, "apps/v1", "t")
    return out


def container(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(obj["spec"]["template"]["spec"]["containers"][0])


def test_leaves_key_merge_lists_by_name_and_port_and_keep_other_lists_atomic() -> None:
    paths = leaves(deployment(A="1"))
    main = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"main"}')
    assert (*main, ".") in paths
    assert (*main, "f:image") in paths
    assert (*main, "f:args") in paths  # atomic: one leaf
    assert (*main, "f:env", 'k:{"name":"A"}', "f:value") in paths
    port = 'k:{"containerPort":8000,"protocol":"TCP"}'
    assert (*main, "f:ports", port, "f:name") in paths
    assert ("f:metadata", "f:name") not in paths  # the server's, not a manager's


def test_managed_fields_round_trip() -> None:
    owners: Owners = {OP: leaves(deployment(A="1")), ("hpa", "Update", "scale"): {("f:x",)}}
    entries = write_owners(owners, "apps/v1", "t")
    assert [(e["manager"], e["operation"], e.get("subresource")) for e in entries] == [
        ("op", "Apply", None),
        ("hpa", "Update", "scale"),
    ]
    assert read_owners({"metadata": {"managedFields": entries}}) == owners


def test_apply_creates_and_owns_what_it_sets() -> None:
    result = server_side_apply(None, deployment(A="1"), "op", force=False)
    assert result.obj == deployment(A="1")
    assert result.owners == {OP: leaves(deployment(A="1"))}


def test_a_field_dropped_from_the_next_apply_is_removed() -> None:
    first = server_side_apply(None, deployment(A="1", B="2"), "op", force=False)
    second = server_side_apply(
        stored(first.obj, first.owners), deployment(A="1"), "op", force=False
    )
    assert container(second.obj)["env"] == [{"name": "A", "value": "1"}]
    dropped_labels = deployment(A="1")
    del dropped_labels["metadata"]["labels"]
    third = server_side_apply(stored(second.obj, second.owners), dropped_labels, "op", force=False)
    assert "labels" not in third.obj["metadata"]


def test_another_managers_change_conflicts_unless_forced_and_force_takes_it_back() -> None:
    first = server_side_apply(None, deployment(A="1"), "op", force=False)
    live = stored(first.obj, first.owners)
    edited = copy.deepcopy(live)
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "img:hacked"
    owners = record_update(live, edited, "kubectl-edit")
    image = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"main"}', "f:image")
    assert owners[("kubectl-edit", "Update", "")] == {image}
    assert image not in owners[OP]
    edited = stored(edited, owners)

    with pytest.raises(ApplyConflictError) as caught:
        server_side_apply(edited, deployment(A="1"), "op", force=False)
    assert str(caught.value) == (
        'Apply failed with 1 conflicts: conflict with "kubectl-edit": '
        ".spec.template.spec.containers[name='main'].image"
    )
    forced = server_side_apply(edited, deployment(A="1"), "op", force=True)
    assert container(forced.obj)["image"] == "img:1"
    assert ("kubectl-edit", "Update", "") not in forced.owners
    assert image in forced.owners[OP]


def test_fields_of_other_managers_survive_and_are_not_removed_when_dropped() -> None:
    config = deployment(A="1")
    del config["spec"]["replicas"]
    first = server_side_apply(None, config, "op", force=False)
    live = stored(first.obj, first.owners)
    changed = copy.deepcopy(live)
    changed["metadata"]["annotations"] = {"team": "blue"}
    changed["spec"]["replicas"] = 5
    changed["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "USER", "value": "x"}
    )
    live = stored(changed, record_update(live, changed, "kubectl-edit"))

    again = server_side_apply(live, config, "op", force=False)
    assert again.obj["metadata"]["annotations"] == {"team": "blue"}
    assert again.obj["spec"]["replicas"] == 5
    assert container(again.obj)["env"] == [
        {"name": "A", "value": "1"},
        {"name": "USER", "value": "x"},
    ]


def test_a_field_shared_with_another_manager_stays_when_one_drops_it() -> None:
    first = server_side_apply(None, deployment(A="1"), "op", force=False)
    live = stored(first.obj, first.owners)
    other = server_side_apply(live, {"metadata": {"labels": {"app": "web"}}}, "me", force=False)
    live = stored(other.obj, other.owners)
    config = deployment(A="1")
    del config["metadata"]["labels"]
    after = server_side_apply(live, config, "op", force=False)
    assert after.obj["metadata"]["labels"] == {"app": "web"}


def test_keyed_items_merge_and_new_items_are_added() -> None:
    first = server_side_apply(None, deployment(A="1"), "op", force=False)
    live = stored(first.obj, first.owners)
    sidecar_config = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "proxy", "image": "p:1"}]}}},
    }
    with_sidecar = server_side_apply(live, sidecar_config, "mesh", force=False)
    names = [c["name"] for c in with_sidecar.obj["spec"]["template"]["spec"]["containers"]]
    assert names == ["main", "proxy"]
    again = server_side_apply(
        stored(with_sidecar.obj, with_sidecar.owners), deployment(A="1"), "op", force=False
    )
    names = [c["name"] for c in again.obj["spec"]["template"]["spec"]["containers"]]
    assert names == ["main", "proxy"]


def test_an_update_that_removes_a_field_leaves_nobody_owning_it() -> None:
    first = server_side_apply(None, deployment(A="1", B="2"), "op", force=False)
    live = stored(first.obj, first.owners)
    patched = copy.deepcopy(live)
    patched["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    owners = record_update(live, patched, "kubectl-edit")
    b_item = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"main"}', "f:env")
    assert not [p for p in owners[OP] if p[: len(b_item) + 1] == (*b_item, 'k:{"name":"B"}')]
    assert ("kubectl-edit", "Update", "") not in owners  # it changed nothing it now owns
