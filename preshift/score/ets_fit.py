"""Fit additive-error ETS with statsforecast: the only module of ``score`` that imports it.

The fit is statsforecast's own ``ets_f`` (its Python search over its C++ core), but loaded
without the rest of the package when it can be: ``import statsforecast.ets`` runs
``statsforecast/__init__`` (pandas, polars adapters, every model) and ets.py's own imports
(statsmodels for seasonal decompositions, scipy.stats for non-normal errors, pandas through
``statsforecast.utils``), about 1 s and 175 MiB of RSS, although a non-seasonal fit with
normal errors only needs numpy and the C++ extension (about 35 MiB). The fit worker process
(exporter/fitworker.py) is such a second interpreter, so that difference is most of its size.

:func:`load_ets_module` executes statsforecast's ets.py from the installed package under a
private name, with stand-ins for those imports (see ``_STANDINS``): what the normal-error path
calls is provided as is (copied, a few lines), everything else imports the real module on its
first call. If statsforecast is already imported, or its layout is not the one expected, the
ordinary import is used: the same code either way, so the same results (tests compare them).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import sys
import threading
from collections import namedtuple
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from preshift.score.ets_model import EtsParams, ModelKind

log = logging.getLogger(__name__)

# Additive error, trend chosen among none / additive / damped (damped=None lets AICc pick),
# no season: the same search as AutoETS(model="AZN", damped=None, season_length=1).
MODEL = "AZN"

_KINDS = {"ANNN": ModelKind.ANN, "AANN": ModelKind.AAN, "AAND": ModelKind.AADN}

#: The private package statsforecast's ets.py is executed in (never a real package).
PRIVATE = "preshift.score._statsforecast_light"


def fit_auto_ets(y: npt.NDArray[np.float64]) -> EtsParams:
    """Select and fit the ETS model for one series; the state is at its last point.

    Raises ``ValueError`` when statsforecast picks a model outside the class-1 family the
    forecaster's closed forms cover (it should not with ``MODEL``).
    """
    # AutoETS.fit is a thin wrapper over ets_f; calling it directly skips statsforecast.models.
    fit = _ets_f()(np.ascontiguousarray(y, dtype=np.float64), m=1, model=MODEL, damped=None)
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


_loaded: Callable[..., Any] | None = None
_load_lock = threading.Lock()


def _ets_f() -> Callable[..., Any]:
    global _loaded
    if _loaded is None:
        with _load_lock:
            if _loaded is None:
                _loaded = ets_module().ets_f
    return _loaded


def ets_module() -> ModuleType:
    """statsforecast's ets module: the imported one if statsforecast is already imported,
    else the light load, else (another statsforecast layout) the ordinary import."""
    imported = sys.modules.get("statsforecast.ets")
    if imported is not None:
        return imported
    try:
        return load_ets_module()
    except Exception as exc:  # not the layout this was written for: pay for the full import
        log.info("statsforecast's ETS could not be loaded alone (%s); importing statsforecast",
                 exc)
        import statsforecast.ets

        return statsforecast.ets


def load_ets_module() -> ModuleType:
    """Execute statsforecast's ets.py alone, as ``PRIVATE.ets`` (see the module docstring)."""
    name = f"{PRIVATE}.ets"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("statsforecast")  # locates it without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("statsforecast is not installed")
    where = list(spec.submodule_search_locations)
    package = ModuleType(PRIVATE)
    package.__path__ = where
    ets_spec = importlib.machinery.PathFinder.find_spec(name, where)
    if ets_spec is None or ets_spec.loader is None:
        raise ImportError("statsforecast/ets.py not found")
    module = importlib.util.module_from_spec(ets_spec)
    added = {PRIVATE: package, f"{PRIVATE}._lib": _extension(where)}
    for real, names in _STANDINS.items():
        if real.startswith("statsforecast."):  # ets.py's relative imports: ours for good
            added[real.replace("statsforecast", PRIVATE, 1)] = _standin(real, names)
        elif real not in sys.modules:  # an absolute one: only while ets.py runs
            added[real] = _standin(real, names)
    sys.modules.update(added)
    done = False
    try:
        ets_spec.loader.exec_module(module)
        done = True
    finally:
        for key in added:
            if not done or not key.startswith(PRIVATE):
                sys.modules.pop(key, None)
    sys.modules[name] = module
    return module


def _extension(where: list[str]) -> ModuleType:
    """statsforecast's C++ extension, loaded under its own name (statsforecast._lib), so that
    a later ordinary import of statsforecast finds it instead of initialising it twice."""
    loaded = sys.modules.get("statsforecast._lib")
    if loaded is not None:
        return loaded
    spec = importlib.machinery.PathFinder.find_spec("statsforecast._lib", where)
    if spec is None or spec.loader is None:
        raise ImportError("statsforecast/_lib not found")
    lib = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lib)
    sys.modules["statsforecast._lib"] = lib
    return lib


def _aic_bic_aicc(neg2logL: float, np_eff: int, n: int) -> tuple[float, float, float]:
    """statsforecast.distributions.aic_bic_aicc (2.1.1): the same arithmetic, in the same order."""
    aic = neg2logL + 2 * np_eff
    bic = neg2logL + np.log(n) * np_eff
    aicc = aic + 2 * np_eff * (np_eff + 1) / (n - np_eff - 1) if n - np_eff - 1 != 0.0 else np.inf
    return aic, bic, aicc


#: Per module ets.py imports from: the names the non-seasonal, normal-error fit uses (as
#: statsforecast 2.1.1 defines them), and the names it only imports (None: the real module
#: is imported when one is first called: a seasonal or non-normal fit, a forecast interval).
_STANDINS: dict[str, dict[str, Any]] = {
    "statsforecast.utils": {
        "results": namedtuple("results", "x fn nit simplex"),  # theirs
        # tuple(Distribution): a str enum, so its members compare equal to these strings
        "_VALID_DISTRIBUTIONS": ("normal", "laplace", "t", "skew-normal", "ged"),
        "_calculate_intervals": None,
    },
    "statsforecast.distributions": {
        "aic_bic_aicc": _aic_bic_aicc,
        "switch_distribution": None,
        "dist_init_params": None,
        "extract_dist_params": None,
        "error_params_from_model": None,
    },
    "statsmodels.tsa.seasonal": {"seasonal_decompose": None},
}


def _standin(real: str, names: dict[str, Any]) -> ModuleType:
    stub = ModuleType(f"{PRIVATE} stand-in for {real}")
    for key, value in names.items():
        setattr(stub, key, value if value is not None else _deferred(real, key))
    return stub


def _deferred(module: str, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call
