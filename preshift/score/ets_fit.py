"""Fit additive-error ETS with statsforecast: the only module of ``score`` that imports it.

Importing statsforecast costs about 1 s and 130 MiB of RSS, so :mod:`preshift.score.forecast`
imports this module only when its default fitter is first used.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# AutoETS.fit is a thin wrapper over ets_f; calling it directly skips statsforecast.models,
# whose import (ARIMA pulls in statsmodels.api) costs another ~0.6 s and ~30 MiB.
from statsforecast.ets import ets_f

from preshift.score.forecast import EtsParams, ModelKind

# Additive error, trend chosen among none / additive / damped (damped=None lets AICc pick),
# no season: the same search as AutoETS(model="AZN", damped=None, season_length=1).
MODEL = "AZN"

_KINDS = {"ANNN": ModelKind.ANN, "AANN": ModelKind.AAN, "AAND": ModelKind.AADN}


def fit_auto_ets(y: npt.NDArray[np.float64]) -> EtsParams:
    """Select and fit the ETS model for one series; the state is at its last point.

    Raises ``ValueError`` when statsforecast picks a model outside the class-1 family the
    forecaster's closed forms cover (it should not with ``MODEL``).
    """
    fit = ets_f(np.ascontiguousarray(y, dtype=np.float64), m=1, model=MODEL, damped=None)
    kind = _KINDS.get(str(fit["components"]))
    if kind is None:
        raise ValueError(f"unexpected ETS components {fit['components']!r}")
    alpha, beta, _gamma, phi = (float(x) for x in fit["par"][:4])
    state = fit["states"][-1]
    has_trend = kind != ModelKind.ANN
    return EtsParams(
        kind=kind,
        alpha=alpha,
        beta=beta if has_trend else 0.0,
        phi=phi if kind == ModelKind.AADN else 1.0,
        sigma2=float(fit["sigma2"]),
        level=float(state[0]),
        trend=float(state[1]) if has_trend else 0.0,
    )
