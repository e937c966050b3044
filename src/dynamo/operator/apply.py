"""Client-side apply: the JSON merge patch that takes a live object to the desired one.

Like `kubectl apply`, the last applied manifest is kept in an annotation so that a field the
operator stopped setting is removed, while fields others set (server defaults, status, other
controllers' annotations) are left alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from dynamo.operator.labels import LAST_APPLIED_ANNOTATION

_MISSING = object()


def merge_patch(
    last: Mapping[str, Any] | None, live: Mapping[str, Any], desired: Mapping[str, Any]
) -> dict[str, Any]:
    """A three-way JSON merge patch (RFC 7386): set what differs from `desired`, and null the
    keys that `last` had and `desired` dropped. Lists are replaced whole, and only when they
    changed since the last apply: the server fills defaults into list items (containers,
    ports), so comparing them with the live object would patch on every reconcile."""
    last = last or {}
    patch: dict[str, Any] = {}
    for key, want in desired.items():
        have = live.get(key, _MISSING)
        if isinstance(want, Mapping) and isinstance(have, Mapping):
            before = last.get(key)
            sub = merge_patch(before if isinstance(before, Mapping) else {}, have, want)
            if sub:
                patch[key] = sub
        elif isinstance(want, list) and have is not _MISSING and last.get(key) == want:
            continue
        elif have is _MISSING or have != want:
            patch[key] = want
    for key in last:
        if key not in desired and key in live:
            patch[key] = None
    return patch


def with_last_applied(obj: Mapping[str, Any]) -> dict[str, Any]:
    """`obj` carrying its own JSON in the last-applied annotation."""
    out = json.loads(json.dumps(obj))
    meta = out.setdefault("metadata", {})
    annotations = dict(meta.get("annotations") or {})
    annotations[LAST_APPLIED_ANNOTATION] = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    meta["annotations"] = annotations
    return dict(out)


def last_applied(live: Mapping[str, Any]) -> dict[str, Any] | None:
    """The manifest recorded at the last apply, or None (not created by the operator)."""
    raw = (live.get("metadata", {}).get("annotations") or {}).get(LAST_APPLIED_ANNOTATION)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def apply_patch(live: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch to send for `desired` (annotated) given the `live` object."""
    target = with_last_applied(desired)
    previous = last_applied(live)
    return merge_patch(with_last_applied(previous) if previous else None, live, target)
