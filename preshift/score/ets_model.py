"""The fitted-model record the forecaster and the fit worker exchange.

Apart from preshift.score.forecast so that the fit worker (exporter/fitworker.py), a second
interpreter, can import it without numpy's and scipy's maths: only the fit needs it there.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple


class ModelKind(IntEnum):
    """Which model produces a series' forecast (exported as a small integer)."""

    NONE = 0  # fewer than 3 finite points: no forecast
    FALLBACK = 1  # robust random walk with drift, used until the first fit
    ANN = 2  # ETS(A,N,N): level only
    AAN = 3  # ETS(A,A,N): level and trend
    AADN = 4  # ETS(A,Ad,N): level and damped trend


class EtsParams(NamedTuple):
    """A fitted additive-error ETS model and its state at the last point of the fitted data."""

    kind: ModelKind
    alpha: float
    beta: float  # 0 without trend
    phi: float  # 1 without damping
    sigma2: float  # one-step error variance
    level: float
    trend: float  # 0 without trend
