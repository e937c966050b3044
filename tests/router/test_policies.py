import random

import pytest

from dynamo.protocols.kv_events import (
    LoadMetrics,
)
from dynamo.router.base import RouteRequest, WorkerInfo
from dynamo.router.config import RouterConfig
from dynamo.router.policies import (
    DirectPolicy,
    KvPolicy,
    RandomPolicy,
    RoundRobinPolicy,
    make_policy,
)
from dynamo.runtime.errors import (
    ConfigError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    UnavailableError,
)

ALL = [RoundRobinPolicy, RandomPolicy, DirectPolicy, KvPolicy]


def with_workers(cls, ids=(1, 2, 3), config=None, **info):
    p = cls(config or RouterConfig(), random.Random(0))
    for i in ids:
        p.add_worker(WorkerInfo(i, info.pop("block", 16), **info))
    return p


def req(rid="r", tokens=(1, 2, 3), **kw):
    return RouteRequest(rid, list(tokens), **kw)


@pytest.mark.parametrize(
    ("mode", "cls"),
    [
        ("round-robin", RoundRobinPolicy),
        ("random", RandomPolicy),
        ("direct", DirectPolicy),
        ("kv", KvPolicy),
    ],
)
def test_make_policy(mode, cls):
    assert type(make_policy(RouterConfig(router_mode=mode))) is cls


def test_round_robin_cycles_in_instance_order_and_skips_excluded():
    p = with_workers(RoundRobinPolicy, ids=(3, 1, 2))
    assert [p.select(req()).instance_id for _ in range(6)] == [1, 2, 3, 1, 2, 3]
    picks = {p.select(req(exclude=frozenset({2}))).instance_id for _ in range(4)}
    assert picks == {1, 3}
    assert p.workers() == [1, 2, 3]


def test_round_robin_covers_dp_ranks():
    p = with_workers(RoundRobinPolicy, ids=(1,), data_parallel_size=2)
    assert [(d.instance_id, d.dp_rank) for d in (p.select(req()) for _ in range(3))] == [
        (1, 0),
        (1, 1),
        (1, 0),
    ]


def test_random_reaches_every_worker():
    p = with_workers(RandomPolicy)
    assert {p.select(req()).instance_id for _ in range(100)} == {1, 2, 3}


def test_direct_needs_a_target():
    p = with_workers(DirectPolicy)
    with pytest.raises(InvalidRequestError, match=r"needs nvext\.backend_instance_id") as exc:
        p.select(req())
    assert exc.value.param == "nvext.backend_instance_id"
    assert p.select(req(backend_instance_id=2)).instance_id == 2


@pytest.mark.parametrize("cls", ALL)
def test_backend_instance_id_is_honoured_by_every_mode(cls):
    p = with_workers(cls)
    assert {p.select(req(f"r{i}", backend_instance_id=3)).instance_id for i in range(5)} == {3}
    with pytest.raises(NotFoundError, match="backend instance 9 is not a known worker"):
        p.select(req(backend_instance_id=9))
    with pytest.raises(UnavailableError, match="backend instance 3 is excluded"):
        p.select(req(backend_instance_id=3, exclude=frozenset({3})))


@pytest.mark.parametrize("cls", [RoundRobinPolicy, RandomPolicy, KvPolicy])
def test_no_workers_and_all_excluded(cls):
    p = cls(RouterConfig(), random.Random(0))
    with pytest.raises(UnavailableError, match="no workers are available"):
        p.select(req())
    p.add_worker(WorkerInfo(1, 16))
    with pytest.raises(UnavailableError, match="all 1 workers are excluded"):
        p.select(req(exclude=frozenset({1})))
    p.remove_worker(1)
    assert p.workers() == []


@pytest.mark.parametrize("cls", ALL)
def test_busy_thresholds_filter_and_overload(cls):
    config = RouterConfig(active_decode_blocks_threshold=0.8, active_prefill_tokens_threshold=500)
    p = with_workers(cls, ids=(1, 2), config=config)
    p.apply_load(LoadMetrics(1, kv_active_blocks=90, kv_total_blocks=100))
    p.apply_load(LoadMetrics(7, kv_active_blocks=90, kv_total_blocks=100))  # unknown: ignored
    if cls is not DirectPolicy:
        assert {p.select(req(f"a{i}")).instance_id for i in range(4)} == {2}
    with pytest.raises(OverloadedError):
        p.select(req(backend_instance_id=1))
    p.apply_load(LoadMetrics(2, active_prefill_tokens=501))
    if cls is not DirectPolicy:
        with pytest.raises(OverloadedError, match="all 2 candidate workers are over their busy"):
            p.select(req())
    with pytest.raises(OverloadedError, match="all 1 candidate workers are over their busy"):
        p.select(req(backend_instance_id=2))
    # raised at runtime (the /busy_threshold endpoint): nobody is busy any more
    p.set_busy_thresholds(0.95, 1000)
    assert p.select(req("late", backend_instance_id=1)).instance_id == 1
    with pytest.raises(ConfigError, match="active_decode_blocks_threshold must be in"):
        p.set_busy_thresholds(1.5)


def test_busy_uses_model_card_total_when_metrics_lack_it():
    p = with_workers(
        RoundRobinPolicy,
        ids=(1, 2),
        config=RouterConfig(active_decode_blocks_threshold=0.5),
        total_kv_blocks=10,
    )
    p.apply_load(LoadMetrics(1, kv_active_blocks=6))
    assert {p.select(req()).instance_id for _ in range(3)} == {2}


def test_removing_a_worker_drops_its_load():
    p = with_workers(
        RoundRobinPolicy, ids=(1,), config=RouterConfig(active_prefill_tokens_threshold=1)
    )
    p.apply_load(LoadMetrics(1, active_prefill_tokens=5))
    p.remove_worker(1)
    p.add_worker(WorkerInfo(1, 16))
    assert p.select(req()).instance_id == 1


def test_bad_dp_size_is_rejected():
    with pytest.raises(ConfigError, match="data_parallel_size must be >= 1, got 0"):
        RoundRobinPolicy().add_worker(WorkerInfo(1, 16, data_parallel_size=0))
