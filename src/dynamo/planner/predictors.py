"""Load predictors: forecast next interval's request count, ISL or OSL from past intervals.

One interface (`add` an observation, `predict` the next value), four implementations:
`constant` (last value), `kalman` (local linear trend, pure Python), `arima` (pmdarima, the
`planner-arima` extra) and `prophet` (the `planner-prophet` extra). Leading zeros (a graph
that has not seen traffic yet) are skipped, as Dynamo does; later zeros are real data.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Protocol

from dynamo.runtime.extras import import_extra


class LoadPredictor(Protocol):
    def add(self, value: float) -> None:
        """Record one interval's observed value (finite, >= 0)."""
        ...

    def predict(self) -> float | None:
        """The forecast for the next interval (>= 0), or None before any data."""
        ...


class _History:
    """Observed values, without the leading zeros, at most `window` of them."""

    def __init__(self, window: int) -> None:
        self.values: deque[float] = deque(maxlen=window)

    def add(self, value: float) -> bool:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"a load observation must be finite and >= 0, got {value}")
        if not self.values and value == 0:
            return False
        self.values.append(float(value))
        return True


class ConstantPredictor:
    """Next = last."""

    def __init__(self) -> None:
        self._history = _History(1)

    def add(self, value: float) -> None:
        self._history.add(value)

    def predict(self) -> float | None:
        return self._history.values[-1] if self._history.values else None


class KalmanPredictor:
    """Local linear trend: state (level, trend), level' = level + trend; one-step forecast.

    Until `min_points` observations it predicts the last value. The 2x2 covariance update is
    written out (no numpy needed for a two-dimensional state).
    """

    def __init__(
        self, q_level: float = 1.0, q_trend: float = 0.1, r: float = 10.0, min_points: int = 5
    ) -> None:
        self.q_level, self.q_trend, self.r, self.min_points = q_level, q_trend, r, min_points
        self._history = _History(1)
        self._count = 0
        self._level = 0.0
        self._trend = 0.0
        # covariance [[p00, p01], [p01, p11]]
        self._p00, self._p01, self._p11 = 1e6, 0.0, 1e6

    def add(self, value: float) -> None:
        if not self._history.add(value):
            return
        if self._count == 0:
            self._level, self._trend = value, 0.0
            self._count = 1
            return
        # predict: x = F x, P = F P F' + Q with F = [[1, 1], [0, 1]]
        level, trend = self._level + self._trend, self._trend
        p00 = self._p00 + 2 * self._p01 + self._p11 + self.q_level
        p01 = self._p01 + self._p11
        p11 = self._p11 + self.q_trend
        # update with H = [1, 0]
        s = p00 + self.r
        k0, k1 = p00 / s, p01 / s
        residual = value - level
        self._level = level + k0 * residual
        self._trend = trend + k1 * residual
        self._p00, self._p01, self._p11 = (1 - k0) * p00, (1 - k0) * p01, p11 - k1 * p01
        self._count += 1

    def predict(self) -> float | None:
        if not self._history.values:
            return None
        if self._count < self.min_points:
            return self._history.values[-1]
        return max(0.0, self._level + self._trend)


class ArimaPredictor:
    """pmdarima's `auto_arima`, refit on the window at each prediction."""

    def __init__(self, window: int = 100) -> None:
        self._pmdarima: Any = import_extra("pmdarima", "planner-arima")
        self._history = _History(window)

    def add(self, value: float) -> None:
        self._history.add(value)

    def predict(self) -> float | None:
        values = list(self._history.values)
        if not values:
            return None
        if len(values) < 5 or len(set(values)) == 1:
            return values[-1]  # too little (or no) variation to fit a model
        model = self._pmdarima.auto_arima(
            values, suppress_warnings=True, error_action="ignore", seasonal=False
        )
        forecast = float(model.predict(n_periods=1)[0])
        return max(0.0, forecast) if math.isfinite(forecast) else values[-1]


class ProphetPredictor:
    """Prophet refit on the last `window` intervals (one point per interval)."""

    def __init__(self, window: int = 50, interval_s: float = 60.0) -> None:
        self._prophet: Any = import_extra("prophet", "planner-prophet")
        self._pandas: Any = import_extra("pandas", "planner-prophet")
        self._history = _History(window)
        self._interval_s = interval_s

    def add(self, value: float) -> None:
        self._history.add(value)

    def predict(self) -> float | None:
        values = list(self._history.values)
        if not values:
            return None
        if len(values) < 5 or len(set(values)) == 1:
            return values[-1]
        pd = self._pandas
        times = pd.date_range("2000-01-01", periods=len(values), freq=f"{self._interval_s}s")
        model = self._prophet.Prophet()
        model.fit(pd.DataFrame({"ds": times, "y": values}))
        future = model.make_future_dataframe(periods=1, freq=f"{self._interval_s}s")
        forecast = float(model.predict(future)["yhat"].iloc[-1])
        return max(0.0, forecast) if math.isfinite(forecast) else values[-1]


def make_predictor(
    name: str,
    *,
    window: int = 50,
    interval_s: float = 60.0,
    kalman: tuple[float, float, float, int] = (1.0, 0.1, 10.0, 5),
) -> LoadPredictor:
    """The predictor called `name`; `arima`/`prophet` raise MissingExtraError when absent."""
    if name == "constant":
        return ConstantPredictor()
    if name == "kalman":
        return KalmanPredictor(*kalman)
    if name == "arima":
        return ArimaPredictor(window)
    if name == "prophet":
        return ProphetPredictor(window, interval_s)
    raise ValueError(f"unknown load predictor {name!r}")
