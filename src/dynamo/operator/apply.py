"""Taking over objects an older operator made with client-side apply (create + merge patch,
the last applied manifest in an annotation) so that server-side apply owns them cleanly.

Those writes were Updates by the same field manager. Server-side apply tracks Apply and
Update ownership apart, so without this a field the operator stopped setting would stay
(still owned by its Update entry). As `kubectl` does when it upgrades to server-side apply,
the manager's Update entry is folded into its Apply entry, once, and the annotation goes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dynamo.operator.labels import LAST_APPLIED_ANNOTATION


def made_by_client_side_apply(live: Mapping[str, Any]) -> bool:
    """Whether `live` still carries the last-applied annotation of the older operator."""
    annotations = live.get("metadata", {}).get("annotations") or {}
    return LAST_APPLIED_ANNOTATION in annotations


def _union(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Two fieldsV1 trees as one."""
    out = dict(a)
    for key, sub in b.items():
        out[key] = _union(out.get(key) or {}, sub or {})
    return out


def managed_fields_as_applied(
    entries: list[Mapping[str, Any]], manager: str
) -> list[dict[str, Any]]:
    """`managedFields` with `manager`'s Update entries (not of subresources) folded into its
    Apply entry: what it wrote before it applied is now what it applies."""
    folded: dict[str, Any] = {}
    apply_entry: dict[str, Any] | None = None
    out: list[dict[str, Any]] = []
    for entry in entries:
        mine = entry.get("manager") == manager and not entry.get("subresource")
        if mine and entry.get("operation") == "Update":
            folded = _union(folded, entry.get("fieldsV1") or {})
            continue
        copied = dict(entry)
        if mine and entry.get("operation") == "Apply":
            apply_entry = copied
        out.append(copied)
    if not folded:
        return out
    if apply_entry is None:
        apply_entry = {"manager": manager, "operation": "Apply", "fieldsType": "FieldsV1"}
        apply_entry["apiVersion"] = next((e.get("apiVersion") for e in entries), None)
        out.append(apply_entry)
    apply_entry["fieldsV1"] = _union(apply_entry.get("fieldsV1") or {}, folded)
    return out


def adoption_patch(live: Mapping[str, Any], manager: str) -> dict[str, Any]:
    """The merge patch that hands `live`'s client-side-applied fields to `manager`'s
    server-side apply and drops the last-applied annotation."""
    entries = list(live.get("metadata", {}).get("managedFields") or [])
    return {
        "metadata": {
            "annotations": {LAST_APPLIED_ANNOTATION: None},
            "managedFields": managed_fields_as_applied(entries, manager),
        }
    }
