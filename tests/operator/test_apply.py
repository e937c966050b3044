"""Client-side apply: the three-way merge patch the operator sends."""

from __future__ import annotations

import json

from dynamo.operator.apply import apply_patch, last_applied, merge_patch, with_last_applied
from dynamo.operator.labels import LAST_APPLIED_ANNOTATION


def test_creates_what_is_missing_and_changes_what_differs() -> None:
    live = {"spec": {"replicas": 1, "paused": False}, "status": {"ready": 1}}
    desired = {"spec": {"replicas": 3, "selector": {"a": "b"}}}
    assert merge_patch(None, live, desired) == {"spec": {"replicas": 3, "selector": {"a": "b"}}}


def test_nothing_to_do_gives_an_empty_patch() -> None:
    obj = {"metadata": {"labels": {"a": "1"}}, "spec": {"x": [1, 2]}}
    assert merge_patch(obj, obj, obj) == {}


def test_a_field_dropped_since_the_last_apply_is_nulled() -> None:
    last = {"spec": {"nodeSelector": {"gpu": "h100"}, "replicas": 1}}
    live = {"spec": {"nodeSelector": {"gpu": "h100"}, "replicas": 1, "dnsPolicy": "ClusterFirst"}}
    desired = {"spec": {"replicas": 1}}
    # dnsPolicy was set by the server (not in `last`): left alone.
    assert merge_patch(last, live, desired) == {"spec": {"nodeSelector": None}}


def test_lists_are_replaced_whole() -> None:
    live = {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}
    desired = {"env": [{"name": "A", "value": "1"}]}
    assert merge_patch(live, live, desired) == {"env": [{"name": "A", "value": "1"}]}


def test_apply_patch_records_and_uses_the_last_applied_manifest() -> None:
    first = {"metadata": {"name": "x", "labels": {"old": "1"}}, "spec": {"replicas": 1}}
    live = with_last_applied(first)
    assert json.loads(live["metadata"]["annotations"][LAST_APPLIED_ANNOTATION]) == first
    assert last_applied(live) == first
    second = {"metadata": {"name": "x", "labels": {"new": "1"}}, "spec": {"replicas": 2}}
    patch = apply_patch(live, second)
    assert patch["metadata"]["labels"] == {"new": "1", "old": None}
    assert patch["spec"] == {"replicas": 2}
    assert last_applied({"metadata": {"annotations": {LAST_APPLIED_ANNOTATION: "{bad"}}}) is None


def test_server_defaults_inside_lists_cause_no_patch() -> None:
    applied = {"spec": {"containers": [{"name": "main", "image": "a"}], "replicas": 1}}
    live = {
        "spec": {
            "containers": [{"name": "main", "image": "a", "imagePullPolicy": "IfNotPresent"}],
            "replicas": 3,  # scaled by hand: scalars are brought back
        }
    }
    assert merge_patch(applied, live, applied) == {"spec": {"replicas": 1}}
    changed = {"spec": {"containers": [{"name": "main", "image": "b"}], "replicas": 1}}
    assert merge_patch(applied, live, changed)["spec"]["containers"] == [
        {"name": "main", "image": "b"}
    ]
