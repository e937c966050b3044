"""Adopting objects an older operator made by client-side apply: its Update ownership folded
into its server-side Apply entry, and the last-applied annotation dropped."""

from __future__ import annotations

from typing import Any

from dynamo.operator.apply import (
    adoption_patch,
    made_by_client_side_apply,
    managed_fields_as_applied,
)
from dynamo.operator.labels import LAST_APPLIED_ANNOTATION

SPEC = {"f:spec": {"f:replicas": {}}}
LABELS = {"f:metadata": {"f:labels": {"f:app": {}}}}


def entry(manager: str, operation: str, fields: dict[str, Any], **extra: str) -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": operation,
        "apiVersion": "apps/v1",
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
        **extra,
    }


def test_the_managers_update_entry_becomes_its_apply_entry() -> None:
    entries = [entry("dynamo-operator", "Update", SPEC), entry("kubectl-edit", "Update", LABELS)]
    assert managed_fields_as_applied(entries, "dynamo-operator") == [
        entry("kubectl-edit", "Update", LABELS),
        entry("dynamo-operator", "Apply", SPEC),
    ]


def test_update_and_apply_entries_of_the_manager_are_merged() -> None:
    entries = [
        entry("dynamo-operator", "Apply", LABELS),
        entry("dynamo-operator", "Update", SPEC),
        entry("dynamo-operator", "Update", {"f:status": {"f:x": {}}}, subresource="status"),
    ]
    assert managed_fields_as_applied(entries, "dynamo-operator") == [
        entry("dynamo-operator", "Apply", {**LABELS, **SPEC}),
        entry("dynamo-operator", "Update", {"f:status": {"f:x": {}}}, subresource="status"),
    ]


def test_nothing_to_fold_leaves_the_entries_alone() -> None:
    entries = [entry("kubectl-edit", "Update", LABELS)]
    assert managed_fields_as_applied(entries, "dynamo-operator") == entries


def test_adoption_patch_drops_the_annotation() -> None:
    live = {
        "metadata": {
            "annotations": {LAST_APPLIED_ANNOTATION: "{}", "team": "blue"},
            "managedFields": [entry("dynamo-operator", "Update", SPEC)],
        }
    }
    assert made_by_client_side_apply(live)
    assert adoption_patch(live, "dynamo-operator") == {
        "metadata": {
            "annotations": {LAST_APPLIED_ANNOTATION: None},
            "managedFields": [entry("dynamo-operator", "Apply", SPEC)],
        }
    }
    assert not made_by_client_side_apply({"metadata": {"annotations": {"team": "blue"}}})
