"""Pure helpers of Kubernetes discovery: the ConfigMap a process owns, pod readiness from
EndpointSlices, and heartbeat freshness.

Each process keeps every key it registers in one ConfigMap labelled for discovery. `data` maps
an encoded key to `{"key": ..., "value": ...}` JSON. A process in a pod names the ConfigMap
after its pod (and container), lets the pod own it and annotates the pod: the pod's readiness
in the EndpointSlices of a discovery Service says whether it is alive. A process outside any
pod annotates a heartbeat time and TTL instead.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DISCOVERY_LABEL = "nvidia.com/dynamo-discovery"
DISCOVERY_LABEL_VALUE = "true"
RENEW_ANNOTATION = "nvidia.com/dynamo-discovery-renew-time"
TTL_ANNOTATION = "nvidia.com/dynamo-discovery-ttl-seconds"
HOLDER_ANNOTATION = "nvidia.com/dynamo-discovery-holder"
POD_ANNOTATION = "nvidia.com/dynamo-discovery-pod"
POD_UID_ANNOTATION = "nvidia.com/dynamo-discovery-pod-uid"
# The label of the Services (and so, copied by the EndpointSlice controller, of their slices)
# whose ready endpoints make pods' discovery records visible.
DISCOVERY_SERVICE_LABEL = "nvidia.com/dynamo-discovery-service"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_MAX_NAME = 253
_MAX_DATA_KEY = 253
_PLAIN = re.compile(r"[A-Za-z0-9-]")


@dataclass(frozen=True)
class PodIdentity:
    """The pod this process runs in (downward API: POD_NAME, POD_UID), and the container
    (DYN_CONTAINER_NAME, needed only when several containers of a pod register keys)."""

    name: str = ""
    uid: str = ""
    container: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> PodIdentity | None:
        name = environ.get("POD_NAME", "").strip()
        if not name:
            return None
        uid = environ.get("POD_UID", "").strip()
        return cls(name, uid, environ.get("DYN_CONTAINER_NAME", "").strip())


def pod_object_name(pod: PodIdentity) -> str:
    """The ConfigMap of the process in `pod` (and its container): a process restarted in the
    same pod writes the same object, replacing its predecessor's record."""
    base = f"dyn-{pod.name}" + (f"-{pod.container.lower()}" if pod.container else "")
    if len(base) <= _MAX_NAME:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:16]
    return f"{base[: _MAX_NAME - 17].rstrip('.-')}-{digest}"


def data_key(key: str) -> str:
    """A ConfigMap data key for `key` (`[-._a-zA-Z0-9]`, at most 253 characters).

    `/` becomes `.`, and `.`, `_` and any other character become `_xx` hex escapes, so
    distinct keys never collide; keys too long for that are hashed (`_h` + sha256).
    """
    out = []
    for char in key:
        if _PLAIN.fullmatch(char):
            out.append(char)
        elif char == "/":
            out.append(".")
        else:
            out.extend(f"_{byte:02x}" for byte in char.encode())
    encoded = "".join(out)
    if len(encoded) > _MAX_DATA_KEY or not encoded:
        return "_h" + hashlib.sha256(key.encode()).hexdigest()
    return encoded


def data_value(key: str, value: Mapping[str, Any]) -> str:
    return json.dumps({"key": key, "value": dict(value)}, separators=(",", ":"), sort_keys=True)


def format_time(epoch_s: float) -> str:
    """RFC 3339 with microseconds, as Kubernetes writes MicroTime."""
    moment = datetime.datetime.fromtimestamp(epoch_s, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> float | None:
    try:
        moment = datetime.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def heartbeat_annotations(renew_s: float, ttl_s: float) -> dict[str, str]:
    return {RENEW_ANNOTATION: format_time(renew_s), TTL_ANNOTATION: f"{ttl_s:g}"}


def discovery_object(
    name: str,
    *,
    data: Mapping[str, str],
    holder: str,
    owner: PodIdentity | None,
    heartbeat: tuple[float, float] | None,
) -> dict[str, Any]:
    """The ConfigMap `name` holding a process's entries (`data` already encoded).

    `heartbeat` (renew time, TTL) marks a process outside any pod; without it the record is
    alive while `owner` is Ready in a discovery Service's EndpointSlice."""
    annotations = {HOLDER_ANNOTATION: holder}
    if heartbeat is not None:
        annotations.update(heartbeat_annotations(*heartbeat))
    elif owner is not None:
        annotations.update({POD_ANNOTATION: owner.name, POD_UID_ANNOTATION: owner.uid})
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {DISCOVERY_LABEL: DISCOVERY_LABEL_VALUE},
        "annotations": annotations,
    }
    if owner is not None and owner.name and owner.uid:
        # No blockOwnerDeletion: it needs extra permissions on the pod and buys nothing here.
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Pod", "name": owner.name, "uid": owner.uid}
        ]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": dict(data)}


@dataclass(frozen=True)
class DiscoveryRecord:
    """What one discovery ConfigMap says: whose it is (a pod, or a heartbeat with its
    freshness) and which entries."""

    name: str
    renew_s: float | None  # None for a record whose liveness is its pod's readiness
    ttl_s: float
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    pod: PodIdentity | None = None


def parse_record(obj: Mapping[str, Any], default_ttl_s: float) -> DiscoveryRecord | None:
    """The record of a discovery ConfigMap; None when it is not one (no label, or neither a
    heartbeat nor a pod)."""
    meta = obj.get("metadata") or {}
    if (meta.get("labels") or {}).get(DISCOVERY_LABEL) is None or not meta.get("name"):
        return None
    annotations = meta.get("annotations") or {}
    renew_s = parse_time(annotations.get(RENEW_ANNOTATION, ""))
    pod = None
    if renew_s is None:
        pod_name = str(annotations.get(POD_ANNOTATION) or "")
        if not pod_name:
            return None
        pod = PodIdentity(pod_name, str(annotations.get(POD_UID_ANNOTATION) or ""))
    try:
        ttl_s = float(annotations.get(TTL_ANNOTATION, default_ttl_s))
    except (TypeError, ValueError):
        ttl_s = default_ttl_s
    if not ttl_s > 0:
        ttl_s = default_ttl_s
    entries: dict[str, dict[str, Any]] = {}
    for raw in (obj.get("data") or {}).values():
        try:
            doc = json.loads(raw)
        except (TypeError, ValueError):
            continue
        if (
            isinstance(doc, dict)
            and isinstance(doc.get("key"), str)
            and isinstance(doc.get("value"), dict)
        ):
            entries[doc["key"]] = doc["value"]
    return DiscoveryRecord(str(meta["name"]), renew_s, ttl_s, entries, pod)


def ready_pods(endpoint_slice: Mapping[str, Any]) -> frozenset[tuple[str, str]]:
    """(name, uid) of the pods Ready in an EndpointSlice of a discovery Service; empty for any
    other slice. A missing `ready` condition counts as ready, as the API documents."""
    labels = (endpoint_slice.get("metadata") or {}).get("labels") or {}
    if labels.get(DISCOVERY_SERVICE_LABEL) != DISCOVERY_LABEL_VALUE:
        return frozenset()
    out = set()
    for endpoint in endpoint_slice.get("endpoints") or []:
        target = endpoint.get("targetRef") or {}
        if target.get("kind") != "Pod" or not target.get("name"):
            continue
        if (endpoint.get("conditions") or {}).get("ready", True) is False:
            continue
        out.add((str(target["name"]), str(target.get("uid") or "")))
    return frozenset(out)


def ready_index(slices: Iterable[frozenset[tuple[str, str]]]) -> dict[str, frozenset[str]]:
    """Pod name -> uids Ready in any of `slices` (the outputs of `ready_pods`)."""
    index: dict[str, set[str]] = {}
    for ready in slices:
        for name, uid in ready:
            index.setdefault(name, set()).add(uid)
    return {name: frozenset(uids) for name, uids in index.items()}


def pod_is_ready(pod: PodIdentity, index: Mapping[str, frozenset[str]]) -> bool:
    uids = index.get(pod.name)
    if not uids:
        return False
    return not pod.uid or pod.uid in uids or "" in uids


@dataclass
class _Seen:
    renew_s: float
    renewed_at: float  # local monotonic time of the last observed heartbeat
    first_seen: float
    ttl_s: float


class Freshness:
    """Whose heartbeat is current, judged on this process's monotonic clock.

    A heartbeat counts from the moment this process sees it change, so clock skew between
    nodes does not matter once an object has been seen renewing. For an object seen the first
    time, its written renew time gives its age (clamped at zero), so long-dead objects are not
    shown to a process that has just started.
    """

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] = {}

    def observe(self, record: DiscoveryRecord, now_mono: float, now_wall: float) -> None:
        if record.renew_s is None:
            return  # a pod's record: its readiness, not a heartbeat, says whether it lives
        seen = self._seen.get(record.name)
        if seen is None:
            age = max(0.0, now_wall - record.renew_s)
            self._seen[record.name] = _Seen(record.renew_s, now_mono - age, now_mono, record.ttl_s)
        elif seen.renew_s != record.renew_s:
            seen.renew_s, seen.renewed_at, seen.ttl_s = record.renew_s, now_mono, record.ttl_s

    def alive(self, name: str, now_mono: float) -> bool:
        seen = self._seen.get(name)
        return seen is not None and now_mono - seen.renewed_at < seen.ttl_s

    def collectable(self, name: str, now_mono: float) -> float | None:
        """The stale renew time of `name` when it is safe to delete the object: its heartbeat
        is two TTLs old and this process has watched it for at least one TTL."""
        seen = self._seen.get(name)
        if seen is None:
            return None
        stale = now_mono - seen.renewed_at >= 2 * seen.ttl_s
        watched = now_mono - seen.first_seen >= seen.ttl_s
        return seen.renew_s if stale and watched else None

    def forget(self, keep: set[str]) -> None:
        for name in [n for n in self._seen if n not in keep]:
            del self._seen[name]
