"""Load predictors: constant, kalman (local linear trend), and the optional heavy ones."""

from __future__ import annotations

import importlib.util

import pytest

from dynamo.planner.predictors import ConstantPredictor, KalmanPredictor, make_predictor
from dynamo.runtime.errors import MissingExtraError


def test_constant_is_the_last_value_and_skips_leading_zeros() -> None:
    p = ConstantPredictor()
    assert p.predict() is None
    p.add(0)
    assert p.predict() is None  # idle before the first request is not data
    p.add(5)
    p.add(7)
    assert p.predict() == 7
    p.add(0)
    assert p.predict() == 0  # after traffic, zero is real


def test_kalman_follows_a_linear_ramp() -> None:
    p = KalmanPredictor(q_level=1.0, q_trend=0.1, r=1.0, min_points=3)
    for t in range(30):
        p.add(10.0 + 5.0 * t)
    forecast = p.predict()
    assert forecast is not None
    assert abs(forecast - (10.0 + 5.0 * 30)) < 1.0  # next point of the ramp


def test_kalman_predicts_last_value_before_min_points() -> None:
    p = KalmanPredictor(min_points=5)
    for v in (3.0, 9.0):
        p.add(v)
    assert p.predict() == 9.0


def test_kalman_settles_on_a_constant_and_never_goes_negative() -> None:
    p = KalmanPredictor()
    for _ in range(50):
        p.add(20.0)
    forecast = p.predict()
    assert forecast is not None and abs(forecast - 20.0) < 1e-6
    for _ in range(10):
        p.add(0.0)
    forecast = p.predict()
    assert forecast is not None and 0.0 <= forecast < 20.0


def test_rejects_nan() -> None:
    with pytest.raises(ValueError, match="finite"):
        ConstantPredictor().add(float("nan"))


@pytest.mark.parametrize(("name", "package"), [("arima", "pmdarima"), ("prophet", "prophet")])
def test_heavy_predictors_name_their_extra(name: str, package: str) -> None:
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    with pytest.raises(MissingExtraError) as info:
        make_predictor(name)
    assert str(info.value) == f"{package} is not installed: pip install 'pydynamo[planner-{name}]'"


def test_unknown_predictor() -> None:
    with pytest.raises(ValueError, match="unknown load predictor 'linear'"):
        make_predictor("linear")


def test_arima_follows_a_ramp_when_installed() -> None:
    pytest.importorskip("pmdarima")  # pip install 'pydynamo[planner-arima]'
    p = make_predictor("arima")
    for v in range(10, 34, 2):
        p.add(float(v))
    forecast = p.predict()
    assert forecast is not None and abs(forecast - 34.0) < 1.0
