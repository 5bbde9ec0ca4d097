"""Scoring maths: forecasts, breach probabilities (pure; no I/O, no statsforecast import).

statsforecast is imported lazily by :mod:`preshift.score.ets_fit` when a fit first runs.
"""

from preshift.score.forecast import (
    EtsParams,
    Forecaster,
    ForecastResult,
    ModelArrays,
    ModelKind,
    RefreshStats,
    SeriesBatch,
    batch_from_history,
    make_batch,
)
from preshift.score.probability import breach_probability

__all__ = [
    "EtsParams",
    "ForecastResult",
    "Forecaster",
    "ModelArrays",
    "ModelKind",
    "RefreshStats",
    "SeriesBatch",
    "batch_from_history",
    "breach_probability",
    "make_batch",
]
