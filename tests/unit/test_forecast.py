"""Forecaster: state updates, fit scheduling, fallback and quality, with a fake fitter.

These tests never import statsforecast; tests/unit/test_forecast_ets_fit.py does.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from preshift.errors import InputError
from preshift.score.forecast import (
    EtsParams,
    Forecaster,
    ModelKind,
    SeriesBatch,
    batch_from_history,
    ets_step,
    fallback_params,
    fill_gaps,
    forecast_paths,
    horizon_moments,
    make_batch,
)

STEP = 60.0


class FakeFitter:
    """ANN with fixed α and σ², its level at the last point; can fail for chosen series."""

    def __init__(self, alpha: float = 0.3, sigma2: float = 1.0, fail_if_first: float | None = None):
        self.alpha, self.sigma2, self.fail_if_first = alpha, sigma2, fail_if_first
        self.calls: list[int] = []  # series i lives near 1000·i: its index, per fit

    def __call__(self, y: np.ndarray) -> EtsParams:
        self.calls.append(round(y[0] / 1000))
        if self.fail_if_first is not None and y[0] == self.fail_if_first:
            raise RuntimeError("optimiser blew up")
        return EtsParams(ModelKind.ANN, self.alpha, 0.0, 1.0, self.sigma2, float(y[-1]), 0.0)


def forecaster(fitter: FakeFitter, **kw: float) -> Forecaster:
    opts = dict(step=STEP, horizon_steps=10, fit_budget_per_refresh=100, refit_after=3600.0)
    return Forecaster(**{**opts, **kw}, fitter=fitter)


def noise_batch(n: int, length: int = 100, end: float = 1e6, seed: int = 0) -> SeriesBatch:
    rng = np.random.default_rng(seed)
    # Series i starts at 1000·i so the fake fitter's calls say which series was fitted.
    series = [1000.0 * i + rng.normal(0, 1, length) for i in range(n)]
    for i, s in enumerate(series):
        s[0] = 1000.0 * i
    return make_batch([f"s{i}" for i in range(n)], series, np.full(n, end))


# --- pure maths -------------------------------------------------------------------------------


def test_missing_point_advances_by_the_forecast() -> None:
    one = np.array([1.0])
    lvl, trd, err = ets_step(one * 10, one * 2, one * 0.5, one * 0.1, one * 0.9, np.array([np.nan]))
    assert lvl[0] == pytest.approx(11.8) and trd[0] == pytest.approx(1.8) and np.isnan(err[0])


def test_horizon_moments_are_the_last_step_of_the_paths() -> None:
    # Rows: ETS(A,N,N), a random walk with drift, ETS(A,Ad,N).
    args = [
        np.array(v)
        for v in ([5.0, 1.0, 3.0], [0.0, -0.1, 0.3], [0.4, 1.0, 0.5], [0.0, 0.0, 0.05],
                  [1.0, 1.0, 0.9], [2.0, 0.5, 1.0])
    ]
    mean, var = forecast_paths(*args, 25)
    m, v = horizon_moments(*args, 25)
    np.testing.assert_allclose([m, v], [mean[:, -1], var[:, -1]])
    # ETS(A,N,N): var_h = σ²(1 + α²(h − 1)); random walk: var_h = σ² h, mean moves by the drift.
    np.testing.assert_allclose(var[0], 2.0 * (1 + 0.16 * np.arange(25)))
    np.testing.assert_allclose(var[1], 0.5 * np.arange(1, 26))
    np.testing.assert_allclose(mean[1], 1.0 - 0.1 * np.arange(1, 26))
    # Damped trend: the mean levels off at l + b·φ/(1 − φ).
    assert mean[2, -1] < 3.0 + 0.3 * 9 and mean[2, -1] > mean[2, 10]


def test_fallback_ignores_a_spike_and_a_gap() -> None:
    rng = np.random.default_rng(1)
    y = 20 + np.cumsum(0.5 + rng.normal(0, 0.2, 288))
    y[100] += 500.0
    y[200:205] = np.nan
    y[-2:] = np.nan
    fb = fallback_params(y, np.array([0, 288]), np.array([0]))
    assert fb.last_value[0] == y[-3] and fb.n_finite[0] == 281
    assert fb.drift[0] == pytest.approx(0.5, abs=0.05)
    assert fb.level[0] == y[-3] + 2 * fb.drift[0]  # the state is at the end of the window
    assert np.sqrt(fb.sigma2[0]) == pytest.approx(0.2, rel=0.25)


def test_fill_gaps_interpolates_inside_and_trims_the_ends() -> None:
    got = fill_gaps(np.array([np.nan, 1.0, np.nan, 3.0, np.nan]))
    np.testing.assert_allclose(got, [1.0, 2.0, 3.0])


# --- scheduling and state -------------------------------------------------------------------


def test_first_refresh_forecasts_every_series_and_fits_within_budget() -> None:
    fit = FakeFitter()
    fc = forecaster(fit, fit_budget_per_refresh=2)
    b = noise_batch(5)
    res = fc.update(b, limits=np.full(5, 1e9), above=np.ones(5, bool))
    assert list(res.kind) == [ModelKind.ANN] * 2 + [ModelKind.FALLBACK] * 3
    assert np.isfinite(res.mean_last).all() and np.isfinite(res.upper).all()
    assert (res.lower[:, 1] < res.lower[:, 0]).all()  # 95 % band wider than 80 %
    assert res.p_breach.tolist() == [0.0] * 5
    assert (res.stats.fitted, res.stats.fit_backlog, res.stats.fresh) == (2, 3, 5)
    res = fc.update(b)
    assert res.stats.fitted == 2 and res.stats.fit_backlog == 1 and np.isnan(res.p_breach).all()


def test_fit_seconds_stops_fitting_but_not_forecasting() -> None:
    res = forecaster(FakeFitter(), fit_seconds=0.0).update(noise_batch(3))
    assert res.stats.fitted == 0 and res.stats.fit_backlog == 3
    assert (res.kind == ModelKind.FALLBACK).all() and np.isfinite(res.mean_last).all()


def test_refit_order_is_never_fitted_then_drifted_then_oldest() -> None:
    fit = FakeFitter(sigma2=1.0)
    fc = forecaster(fit, fit_budget_per_refresh=2, refit_after=600.0, drift_window=4)
    b = noise_batch(4, end=1e5)
    fc.update(b, now=0.0)
    fc.update(b, now=10.0)
    assert fit.calls == [0, 1, 2, 3]  # two per refresh, never-fitted in key order
    # At t=700 every fit is older than refit_after; s3's new points are ~10 σ off (drifted)
    # and a new series s4 appears: s4 (never fitted) goes first, then s3, then the oldest.
    rng = np.random.default_rng(2)
    vals = b.values.reshape(4, -1)
    new = 1000.0 * np.arange(4)[:, None] + rng.normal(0, 0.1, (4, 4))
    new[3] += rng.normal(0, 10, 4)
    moved = np.concatenate([vals[:, 4:], new], axis=1)
    b2 = make_batch(
        [*b.keys, "s4"], [*moved, 4000.0 + rng.normal(0, 1, 100)], np.full(5, 1e5 + 4 * STEP)
    )
    fit.calls.clear()
    res = fc.update(b2, now=700.0)
    assert res.stats.new_points == 16 and res.stats.fresh == 1
    assert fit.calls == [4, 3]
    assert res.stats.fit_backlog == 3
    fit.calls.clear()
    fc.update(b2, now=701.0)
    assert fit.calls == [0, 1]  # both fitted at t=0; s2 (t=10) waits


def test_state_update_matches_the_recursion() -> None:
    fit = FakeFitter(alpha=0.4)
    fc = forecaster(fit)
    rng = np.random.default_rng(3)
    y = rng.normal(10, 1, 60)
    fc.update(make_batch(["a"], [y[:50]], [50 * STEP]))
    level = y[49]  # the fake fit's state
    for k in range(50, 55):
        level = level + 0.4 * (y[k] - level)
    res = fc.update(make_batch(["a"], [y[5:55]], [55 * STEP]), now=55 * STEP)
    assert res.stats.new_points == 5 and res.stats.fitted == 0
    assert fc.models().level[0] == pytest.approx(level)
    assert res.mean_last[0] == pytest.approx(level)


def test_keys_are_matched_by_name_and_absent_series_are_forgotten() -> None:
    fit = FakeFitter()
    fc = forecaster(fit)
    a, b = np.full(40, 1.0), np.full(40, 2.0)
    fc.update(make_batch(["a", "b"], [a, b], [1e5, 1e5]))
    res = fc.update(make_batch(["c", "b"], [a, b], [1e5 + STEP, 1e5 + STEP]))
    assert res.stats.fresh == 1 and res.stats.new_points == 1  # c is new, b has one new point
    assert fc.models().keys == ["c", "b"]
    assert res.kind.tolist() == [ModelKind.ANN, ModelKind.ANN]  # c fitted at once (budget)


def test_a_gap_longer_than_the_window_restarts_the_series() -> None:
    fc = forecaster(FakeFitter())
    fc.update(make_batch(["a"], [np.arange(40.0)], [1e5]))
    res = fc.update(make_batch(["a"], [np.arange(40.0)], [1e5 + 41 * STEP]))
    assert res.stats.fresh == 1 and res.stats.new_points == 0


def test_a_failed_fit_keeps_the_fallback_and_waits_for_refit_after() -> None:
    fit = FakeFitter(fail_if_first=0.0)
    fc = forecaster(fit, refit_after=600.0)
    b = noise_batch(2)
    res = fc.update(b, now=0.0)
    assert res.kind.tolist() == [ModelKind.FALLBACK, ModelKind.ANN]
    assert res.stats.fit_failed == 1 and np.isfinite(res.mean_last).all()
    assert np.isnan(res.fit_age[0]) and res.fit_age[1] == 0.0
    assert fc.update(b, now=300.0).stats.fitted == 0
    assert fc.update(b, now=600.0).stats.fit_failed == 1  # retried, both are due again


def test_too_short_series_get_no_forecast_until_they_have_points() -> None:
    fc = forecaster(FakeFitter())
    res = fc.update(
        make_batch(["a", "b", "c"], [[1.0, np.nan], np.arange(5.0), np.arange(15.0)],
                   [1e5, 1e5, 1e5]),
        limits=[100.0, 100.0, 100.0], above=[True, True, True],
    )
    assert res.kind.tolist() == [ModelKind.NONE, ModelKind.NONE, ModelKind.FALLBACK]
    assert np.isnan(res.p_breach[:2]).all()  # no evidence yet
    assert res.mean_last[2] == pytest.approx(14.0 + 10 * 1.0)  # an exact trend keeps its drift


def test_white_noise_far_below_its_limit_is_no_breach_for_a_new_series() -> None:
    # A handful of noisy points must not be extrapolated into a trend over the horizon.
    rng = np.random.default_rng(7)
    for n in (12, 15, 20):  # below min_fit_points: the fallback model forecasts
        fc = forecaster(FakeFitter())
        y = 0.3 + rng.normal(0, 0.01, n)
        res = fc.update(make_batch(["m"], [y], [1e5]), limits=[0.9], above=[True])
        assert res.kind[0] == ModelKind.FALLBACK
        assert res.p_breach[0] < 0.01, (n, res.p_breach[0])


def test_quality_of_the_right_model_on_white_noise() -> None:
    # The mean is the best forecast of white noise; its MAE is 1/√2 of the last-value forecast's.
    fc = forecaster(FakeFitter(alpha=0.001), quality_window=2000, refit_after=1e9)
    rng = np.random.default_rng(4)
    y = rng.normal(0, 1, 3000)
    y[:40] = 0.0
    fc.update(make_batch(["a"], [y[:40]], [40 * STEP]))
    for k in range(40 + 250, 3001, 250):
        res = fc.update(make_batch(["a"], [y[k - 280 : k]], [k * STEP]), now=k * STEP)
    assert res.mae[0] == pytest.approx(np.sqrt(2 / np.pi), rel=0.1)
    assert res.mase[0] == pytest.approx(1 / np.sqrt(2), rel=0.1)
    assert not res.drifted[0]


def test_growing_errors_are_flagged_and_refit_oldest_first() -> None:
    fit = FakeFitter(sigma2=1.0)
    fc = forecaster(fit, fit_budget_per_refresh=1, refit_after=1e9)
    rng = np.random.default_rng(5)
    calm = [1000.0 * i + rng.normal(0, 1, 100) for i in range(3)]
    end = np.full(3, 1e5)
    for t in range(3):
        fc.update(make_batch(["a", "b", "c"], calm, end), now=float(t))
    assert fit.calls == [0, 1, 2]
    # b and c now miss by ~4 σ for 30 points; a stays calm. One refit per refresh: b (older).
    wild = [np.concatenate([c[30:], c[-1] + rng.normal(0, 4, 30)]) for c in calm]
    wild[0][-30:] = calm[0][-1] + rng.normal(0, 1, 30)
    fit.calls.clear()
    res = fc.update(make_batch(["a", "b", "c"], wild, end + 30 * STEP), now=3.0)
    assert fit.calls == [1]
    assert res.drifted.tolist() == [False, False, True]  # b's detector restarts with its fit
    res = fc.update(make_batch(["a", "b", "c"], wild, end + 30 * STEP), now=4.0)
    assert fit.calls == [1, 2] and not res.drifted.any()


def test_bad_batches_are_rejected() -> None:
    fc = forecaster(FakeFitter())
    with pytest.raises(InputError, match="unique"):
        fc.update(make_batch(["a", "a"], [[1.0], [2.0]], [0.0, 0.0]))
    with pytest.raises(InputError, match="indptr"):
        fc.update(SeriesBatch(["a"], np.zeros(3), np.array([0, 2]), np.zeros(1)))


def test_history_is_placed_on_the_step_grid() -> None:
    b = batch_from_history(
        {"a": ([60.0, 120.0, 240.0], [1.0, 2.0, 4.0]), "b": ([], []), "c": ([300.0], [7.0])},
        STEP,
    )
    np.testing.assert_array_equal(b.values, [1.0, 2.0, np.nan, 4.0, 7.0])
    assert b.indptr.tolist() == [0, 4, 4, 5] and b.keys == ["a", "b", "c"]
    np.testing.assert_array_equal(b.end, [240.0, np.nan, 300.0])
    res = forecaster(FakeFitter()).update(b)
    # too few points for a model yet: no evidence
    assert res.kind.tolist() == [ModelKind.NONE, ModelKind.NONE, ModelKind.NONE]


def test_the_maths_imports_without_statsforecast() -> None:
    code = "import sys, preshift.score; assert 'statsforecast' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_fit_ending_in_missing_points_is_advanced_to_the_window_end() -> None:
    class Trend(FakeFitter):
        def __call__(self, y: np.ndarray) -> EtsParams:
            return EtsParams(ModelKind.AADN, 0.5, 0.1, 0.9, 1.0, float(y[-1]), 2.0)

    fc = forecaster(Trend())
    y = np.arange(40.0)
    y[-2:] = np.nan
    fc.update(make_batch(["a"], [y], [1e5]))
    m = fc.models()
    assert m.level[0] == pytest.approx(37.0 + 0.9 * 2.0 + 0.81 * 2.0)
    assert m.trend[0] == pytest.approx(2.0 * 0.81)
