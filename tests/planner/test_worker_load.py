"""Worker load per role from the workers' kv_metrics messages."""

from __future__ import annotations

from dynamo.planner.decide import RoleLoad
from dynamo.planner.worker_load import WorkerLoads
from dynamo.protocols.kv_events import LoadMetrics


def test_mean_load_per_role_and_stale_workers_drop_out() -> None:
    now = [100.0]
    loads = WorkerLoads(stale_s=10.0, clock=lambda: now[0])
    loads.observe(
        "ns.prefill.kv_metrics",
        LoadMetrics(
            worker_id=1,
            active_prefill_tokens=3000,
            kv_active_blocks=1,
            kv_total_blocks=10,
            request_active_slots=3,
        ).to_wire(),
    )
    loads.observe(
        "ns.prefill.kv_metrics",
        LoadMetrics(worker_id=2, active_prefill_tokens=1000, kv_total_blocks=10).to_wire(),
    )
    loads.observe(
        "ns.backend.kv_metrics",
        LoadMetrics(worker_id=3, kv_active_blocks=9, kv_total_blocks=10).to_wire(),
    )
    loads.observe("ns.backend.kv-events", {"ignored": True})
    snap = loads.snapshot()
    assert snap["prefill"] == RoleLoad(
        workers=2,
        queued_prefill_tokens=2000.0,
        kv_usage=0.05,
        queued_workers=2,
        running_requests=1.5,
    )
    assert snap["decode"] == RoleLoad(
        workers=1, queued_prefill_tokens=0.0, kv_usage=0.9, queued_workers=0
    )
    now[0] = 105.0
    loads.observe(
        "ns.prefill.kv_metrics",
        LoadMetrics(worker_id=1, active_prefill_tokens=10, kv_total_blocks=10).to_wire(),
    )
    now[0] = 112.0  # worker 2 and 3 last spoke 12 s ago
    assert loads.snapshot() == {
        "prefill": RoleLoad(workers=1, queued_prefill_tokens=10.0, queued_workers=1)
    }
