"""Field ownership for the fake API server: server-side apply and `managedFields`, after
Kubernetes' structured-merge-diff, small enough to read.

A field is a path of fieldsV1 keys: `f:<name>` for a map key, `k:<json>` for the item of a
keyed list (`.` for the item itself). Each manager entry (manager, operation, subresource)
owns a set of leaf paths. An Update (create, merge patch, subresource) takes the fields it
changes from everyone else; an Apply sets what its configuration sets, conflicts (409) with
other owners of a field it would change unless forced, and removes the fields it set before
and no longer sets that nobody else owns. Keyed lists are merged item by item; other lists
are atomic (one leaf). No schema: merge keys are known by list name, as the built-in types
declare them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Path = tuple[str, ...]
Owners = dict[tuple[str, str, str], set[Path]]  # (manager, operation, subresource) -> fields

APPLY, UPDATE = "Apply", "Update"
ITEM = "."
# Lists merged by key (Kubernetes' `x-kubernetes-list-map-keys`), by the list's field name.
LIST_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "imagePullSecrets": ("name",),
    "volumeMounts": ("mountPath",),
    "ownerReferences": ("uid",),
}
PORT_KEYS: dict[str, tuple[str, ...]] = {
    "containerPort": ("containerPort", "protocol"),
    "port": ("port", "protocol"),
}
# Fields the server owns: never in a manager's set.
UNTRACKED: frozenset[Path] = frozenset(
    {
        ("f:apiVersion",),
        ("f:kind",),
        *(
            ("f:metadata", f"f:{name}")
            for name in (
                "name",
                "namespace",
                "uid",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "deletionTimestamp",
                "managedFields",
            )
        ),
    }
)
_MISSING = object()


class ApplyConflictError(Exception):
    """An apply would change fields other managers own (the server answers 409)."""

    def __init__(self, conflicts: list[tuple[str, Path]]) -> None:
        self.conflicts = conflicts
        lines = [f'conflict with "{manager}": {render(path)}' for manager, path in conflicts]
        super().__init__(f"Apply failed with {len(conflicts)} conflicts: " + "; ".join(lines))


# --- paths ---------------------------------------------------------------------------------
def _list_keys(name: str, items: list[Any]) -> tuple[str, ...] | None:
    """The merge keys of list `name`, or None when it is atomic."""
    if not items or not all(isinstance(i, Mapping) for i in items):
        return None  # an empty list is one (atomic) value
    if name == "ports":
        for field, port_keys in PORT_KEYS.items():
            if all(field in i for i in items):
                return port_keys
        return None
    keys = LIST_KEYS.get(name)
    if keys is None or not all(all(k in i for k in keys) for i in items):
        return None
    return keys


def _item_key(item: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    values = {k: item.get(k, "TCP" if k == "protocol" else None) for k in keys}
    return "k:" + json.dumps(values, separators=(",", ":"), sort_keys=True)


def leaves(obj: Mapping[str, Any]) -> set[Path]:
    """Every field path of `obj` a manager can own."""
    return {p for p in _walk(obj, ()) if p not in UNTRACKED}


def _walk(value: Any, path: Path) -> Iterator[Path]:
    if isinstance(value, Mapping) and (value or not path):
        for key, sub in value.items():
            yield from _walk(sub, (*path, f"f:{key}"))
        return
    name = path[-1][2:] if path and path[-1].startswith("f:") else ""
    keys = _list_keys(name, value) if isinstance(value, list) else None
    if keys is None:
        yield path
        return
    for item in value:
        item_path = (*path, _item_key(item, keys))
        yield (*item_path, ITEM)
        for key, sub in item.items():
            yield from _walk(sub, (*item_path, f"f:{key}"))


def _find_item(items: list[Any], key: str) -> int | None:
    spec = json.loads(key[2:])
    for i, item in enumerate(items):
        if isinstance(item, Mapping) and all(
            item.get(k, "TCP" if k == "protocol" else None) == v for k, v in spec.items()
        ):
            return i
    return None


def get(obj: Any, path: Path) -> Any:
    """The value at `path`, or `_MISSING`."""
    value = obj
    for step in path:
        if step == ITEM:
            return value
        if step.startswith("f:") and isinstance(value, Mapping):
            value = value.get(step[2:], _MISSING)
        elif step.startswith("k:") and isinstance(value, list):
            index = _find_item(value, step)
            value = _MISSING if index is None else value[index]
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def _is_item_key(path: Path) -> bool:
    return len(path) > 1 and path[-2].startswith("k:") and path[-1][2:] in json.loads(path[-2][2:])


def _remove(obj: dict[str, Any], path: Path) -> None:
    """Delete the field (or keyed item) at `path`, then the maps it leaves empty."""
    if path[-1] == ITEM:
        path = path[:-1]
    parents: list[Any] = [obj]
    for step in path[:-1]:
        child = get(parents[-1], (step,))
        if child is _MISSING:
            return
        parents.append(child)
    last, container = path[-1], parents[-1]
    if last.startswith("f:") and isinstance(container, dict):
        container.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(container, list):
        index = _find_item(container, last)
        if index is not None:
            del container[index]
    if container in ({}, []) and len(path) > 2:  # keep the top-level maps (spec, metadata)
        _remove(obj, path[:-1])


def render(path: Path) -> str:
    """`.spec.template.spec.containers[name="main"].image`, as kubectl prints a field."""
    out = ""
    for step in path:
        if step.startswith("f:"):
            out += "." + step[2:]
        elif step.startswith("k:"):
            out += "[" + ",".join(f"{k}={v!r}" for k, v in json.loads(step[2:]).items()) + "]"
    return out


# --- managedFields <-> owner sets ------------------------------------------------------------
def _to_fields(paths: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for step in path:
            node = node.setdefault(step, {})
    return tree


def _from_fields(tree: Mapping[str, Any], prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    for step, sub in tree.items():
        path = (*prefix, step)
        if step == ITEM or not sub:
            paths.add(path)
        else:
            paths |= _from_fields(sub, path)
    return paths


def read_owners(obj: Mapping[str, Any] | None) -> Owners:
    """The owner sets of `obj`'s `metadata.managedFields`."""
    owners: Owners = {}
    for entry in (obj or {}).get("metadata", {}).get("managedFields") or []:
        key = (entry.get("manager", ""), entry.get("operation", ""), entry.get("subresource", ""))
        owners[key] = _from_fields(entry.get("fieldsV1") or {})
    return owners


def write_owners(owners: Owners, api_version: str, now: str) -> list[dict[str, Any]]:
    """`managedFields` entries of the non-empty owner sets."""
    entries = []
    for (manager, operation, subresource), paths in owners.items():
        if not paths:
            continue
        entry: dict[str, Any] = {
            "manager": manager,
            "operation": operation,
            "apiVersion": api_version,
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": _to_fields(paths),
        }
        if subresource:
            entry["subresource"] = subresource
        entries.append(entry)
    return entries


# --- the two operations ----------------------------------------------------------------------
def _merge(live: Any, config: Any, name: str = "") -> Any:
    """`config` laid over `live`: maps key by key, keyed lists item by item, the rest replaced."""
    if isinstance(live, Mapping) and isinstance(config, Mapping):
        out = dict(live)
        for key, value in config.items():
            out[key] = _merge(live.get(key, _MISSING), value, key)
        return out
    if isinstance(live, list) and isinstance(config, list):
        keys = _list_keys(name, config) if config else None
        if keys is not None and _list_keys(name, live) == keys:
            merged = list(live)
            for item in config:
                index = _find_item(merged, _item_key(item, keys))
                if index is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[index] = _merge(merged[index], item)
            return merged
    return copy.deepcopy(config)


@dataclass(frozen=True)
class Applied:
    """The object after an apply and its owner sets."""

    obj: dict[str, Any]
    owners: Owners


def server_side_apply(
    live: Mapping[str, Any] | None, config: Mapping[str, Any], manager: str, *, force: bool
) -> Applied:
    """Apply `config` as `manager` to `live` (None: the object does not exist yet); returns
    the new object and owner sets. Raises `ApplyConflictError` unless `force`."""
    owners = read_owners(live)
    applied = leaves(config)
    me = (manager, APPLY, "")
    conflicts: list[tuple[str, Path]] = []
    for key, paths in owners.items():
        if key == me:
            continue
        for path in sorted(applied & paths):
            if path[-1] == ITEM:
                continue
            have, want = get(live, path), get(config, path)
            if have is not _MISSING and have != want:
                conflicts.append((key[0], path))
    if conflicts and not force:
        raise ApplyConflictError(conflicts)
    taken = {path for _, path in conflicts}  # forced: the applier takes them over
    for key, paths in owners.items():
        if key != me:
            paths -= taken
    merged = _merge(copy.deepcopy(dict(live or {})), config)
    others: set[Path] = set().union(*(p for k, p in owners.items() if k != me))
    dropped = owners.get(me, set()) - applied
    for path in sorted(dropped, key=len):  # items before their fields
        item = path[:-1] if path[-1] == ITEM else path
        if any(o[: len(item)] == item for o in others | applied) or _is_item_key(path):
            continue  # someone still owns it (or a field inside it), or it names its item
        _remove(merged, path)
    owners[me] = applied
    return Applied(merged, {k: v for k, v in owners.items() if v})


def record_update(
    old: Mapping[str, Any] | None, new: Mapping[str, Any], manager: str, subresource: str = ""
) -> Owners:
    """Owner sets after `manager` changed `old` into `new` without apply (a create, merge
    patch or subresource write): it owns what it changed, and nobody owns what is gone."""
    owners = read_owners(old)
    before, after = leaves(old or {}), leaves(new)
    changed = {p for p in after if p not in before or get(old, p) != get(new, p)}
    if old is not None:
        changed = {p for p in changed if p[-1] != ITEM or p not in before}
    gone = before - after
    for paths in owners.values():
        paths -= changed | gone
    key = (manager, UPDATE, subresource)
    owners[key] = owners.get(key, set()) | changed
    return {k: v for k, v in owners.items() if v}
