"""The statsforecast adapter, and the whole Forecaster against Monte Carlo of its fitted models.

This is the one unit-test module that imports statsforecast (about 1-2 s).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import statsforecast.ets
from scipy.special import ndtri
from statsforecast.ets import ets_f, forecast_ets
from statsforecast.models import AutoETS

from preshift.score.ets_fit import MODEL, fit_auto_ets, load_ets_module
from preshift.score.forecast import (
    Forecaster,
    ModelKind,
    batch_from_history,
    ets_step,
    forecast_paths,
)
from preshift.score.probability import simulate_breach

H = 60


def trending(seed: int, drift: float = 0.3, n: int = 288) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 50 + np.cumsum(rng.normal(drift, 0.5, n)) + rng.normal(0, 1, n)


@pytest.mark.parametrize(("model", "damped"), [("ANN", False), ("AAN", False), ("AAN", True)])
def test_closed_form_matches_statsforecast_intervals(model: str, damped: bool) -> None:
    fit = ets_f(trending(1), m=1, model=model, damped=damped)
    want = forecast_ets(fit, H, level=[80, 95])
    alpha, beta, _, phi = fit["par"][:4]
    state = fit["states"][-1]
    trend = state[1] if model == "AAN" else 0.0
    mean, var = forecast_paths(
        state[0], trend, alpha, 0.0 if np.isnan(beta) else beta,
        phi if damped else 1.0, fit["sigma2"], H,
    )
    sf_mean = want["mean"]
    if damped:
        # statsforecast <= 2.1.1 sums φ + φ + φ² + … + φ^(h-1) instead of φ + … + φ^h
        # (Nixtla/statsforecast#1219, fixed after 2.1.1): accept the textbook or that sum.
        h = np.arange(1, H + 1)
        if not np.allclose(mean, sf_mean, rtol=1e-12):
            sf_mean = sf_mean - trend * (phi - phi**h)
    np.testing.assert_allclose(mean, sf_mean, rtol=1e-12)
    for lv in (80, 95):
        half = ndtri(0.5 + lv / 200) * np.sqrt(var)
        np.testing.assert_allclose(half, want[f"hi-{lv}"] - want["mean"], rtol=1e-9)
        np.testing.assert_allclose(half, want["mean"] - want[f"lo-{lv}"], rtol=1e-9)


def test_adapter_is_autoets_and_its_state_is_at_the_last_point() -> None:
    y = trending(2)
    p = fit_auto_ets(y)
    ref = AutoETS(model=MODEL, damped=None).fit(y).model_
    assert np.allclose(ref["par"][:1], p.alpha) and ref["sigma2"] == p.sigma2
    # Re-running our recursion from statsforecast's initial state lands on the adapter's state.
    par = ref["par"]
    level, trend = np.array([par[4]]), np.array([par[5] if p.kind != ModelKind.ANN else 0.0])
    one = np.ones(1)
    for v in y:
        level, trend, _ = ets_step(level, trend, p.alpha * one, p.beta * one, p.phi * one,
                                   np.array([v]))
    assert level[0] == pytest.approx(p.level) and trend[0] == pytest.approx(p.trend)


def test_forecaster_probabilities_match_monte_carlo_of_its_fitted_models() -> None:
    """50 varied series fitted by AutoETS; P(breach) vs 2,000 simulated paths of each fit."""
    rng = np.random.default_rng(7)
    n, step = 50, 60.0
    history, limits, above = {}, np.empty(n), np.empty(n, dtype=bool)
    for i in range(n):
        drift = rng.choice([0.0, 0.0, 0.05, -0.05, 0.2])
        noise = rng.uniform(0.2, 2.0)
        y = 100 + np.cumsum(rng.normal(drift, rng.uniform(0.05, 1.0), 288))
        y = y + rng.normal(0, noise, 288)
        above[i] = rng.random() < 0.5
        limits[i] = y[-1] + (1 if above[i] else -1) * rng.uniform(0.5, 6) * (noise + 1)
        history[f"s{i}"] = (np.arange(288) * step, y)
    fc = Forecaster(step=step, horizon_steps=H, fit_budget_per_refresh=n, fit_seconds=60)
    res = fc.update(batch_from_history(history, step), limits, above)
    assert res.stats.fitted == n
    m = fc.models()
    mc = simulate_breach(m.level, m.trend, m.alpha, m.beta, m.phi, m.sigma2, limits, above, H,
                         n_paths=2000, seed=8)
    mae = float(np.mean(np.abs(res.p_breach - mc)))
    kinds = {ModelKind(k).name: int((res.kind == k).sum()) for k in np.unique(res.kind)}
    print(f"\nfitted {kinds}; P(breach) MAE vs Monte Carlo {mae:.4f}, MC mean {mc.mean():.3f}")
    assert 0.05 < mc.mean() < 0.95  # the limits make the comparison informative
    assert mae < 0.03


def _series() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [
        trending(3),
        trending(4, drift=0.0),
        50 + rng.normal(0, 1, 288),  # level only
        100 - 0.5 * np.arange(288) + rng.normal(0, 3, 288),  # a steady fall
        np.full(120, 7.0),  # constant: statsforecast's own shortcut
        rng.normal(size=30).cumsum(),
    ]


def test_the_light_load_runs_statsforecasts_own_fit_with_the_same_results() -> None:
    light = load_ets_module()
    assert light is not statsforecast.ets and light.__file__ == statsforecast.ets.__file__
    for y in _series():
        want = ets_f(y, m=1, model=MODEL, damped=None)
        got = light.ets_f(y, m=1, model=MODEL, damped=None)
        assert got["components"] == want["components"]
        for key in ("par", "states", "sigma2", "aicc", "loglik", "residuals"):
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_fitting_imports_neither_pandas_nor_scipy_nor_statsforecasts_package() -> None:
    # In a fresh interpreter: this one has imported statsforecast already.
    code = (
        "import sys, numpy as np\n"
        "from preshift.score.ets_fit import fit_auto_ets\n"
        "p = fit_auto_ets(np.random.default_rng(1).normal(size=200).cumsum())\n"
        "heavy = {'pandas', 'scipy', 'statsmodels', 'statsforecast', 'statsforecast.core'}\n"
        "print(sorted(heavy & set(sys.modules)), p.kind)\n"
        # the ordinary import still works afterwards, sharing the C++ extension
        "from statsforecast.models import AutoETS\n"
        "print(AutoETS(model='AZN', damped=None).fit(np.arange(50.0) % 7).model_['components'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2]).stdout.split("\n")
    assert out[0].startswith("[] ")  # none of them imported; then the kind
    assert out[1].startswith("A")
