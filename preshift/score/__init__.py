"""Scoring maths: forecasts, breach probabilities (pure; no I/O, no statsforecast import).

statsforecast is imported lazily by :mod:`preshift.score.ets_fit` when a fit first runs. The
names below are resolved on first use (PEP 562), so that importing one light submodule, as the
fit worker does with :mod:`preshift.score.ets_model`, does not import scipy through
:mod:`preshift.score.forecast` (about 27 MiB in a process that never forecasts).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from preshift.score.ets_model import EtsParams, ModelKind
    from preshift.score.forecast import (
        Forecaster,
        ForecastResult,
        ModelArrays,
        RefreshStats,
        SeriesBatch,
        batch_from_history,
        make_batch,
    )
    from preshift.score.probability import breach_probability

_WHERE = {
    "EtsParams": "ets_model",
    "ModelKind": "ets_model",
    "ForecastResult": "forecast",
    "Forecaster": "forecast",
    "ModelArrays": "forecast",
    "RefreshStats": "forecast",
    "SeriesBatch": "forecast",
    "batch_from_history": "forecast",
    "make_batch": "forecast",
    "breach_probability": "probability",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
