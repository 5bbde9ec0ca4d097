"""The backtest figure: signal and forecast band on top, HPS and the alarm threshold below.

matplotlib is imported inside `render` with the Agg backend (no display, no GUI toolkit), so
importing this module costs nothing and the core never depends on matplotlib.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import BinaryIO

import numpy as np

from .backtest import BacktestResult, Summary
from .durations import format_duration


def _dates(ts: np.ndarray) -> list[datetime]:
    return [datetime.fromtimestamp(t, UTC) for t in ts.tolist()]


def render(result: BacktestResult, summary: Summary, out: BinaryIO, *, title: str = "") -> None:
    """Write the figure as PNG to `out`."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: never try a display
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    s = result.settings
    horizon = result.horizon_steps * result.step
    when = _dates(result.timestamps)
    target = _dates(result.timestamps + horizon)  # a forecast made at t is about t + H
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]},
        constrained_layout=True,
    )
    try:
        top.fill_between(target, result.lower[:, 1], result.upper[:, 1], color="tab:blue",
                         alpha=0.12, linewidth=0, label="95 % band (forecast for t + H)")
        top.fill_between(target, result.lower[:, 0], result.upper[:, 0], color="tab:blue",
                         alpha=0.22, linewidth=0, label="80 % band")
        top.plot(target, result.mean, color="tab:blue", linestyle="--", linewidth=0.9,
                 label="forecast mean")
        top.plot(when, result.values, color="black", linewidth=1.0, label="signal")
        top.axhline(s.limit, color="tab:red", linestyle="-", linewidth=1.2,
                    label=f"limit {s.limit:g} ({'above' if s.above else 'below'} = breach)")
        bottom.plot(when, result.hps, color="tab:green", linewidth=1.2, label="HPS")
        bottom.axhline(s.alarm_hps, color="tab:orange", linestyle="--", linewidth=1.2,
                       label=f"alarm below {s.alarm_hps:g} (tolerance {s.tolerance:g})")
        for i, ep in enumerate(summary.episodes):
            for ax in (top, bottom):
                # An episode's span runs to its last alarmed refresh plus one step so a
                # single alarmed point is still visible.
                ax.axvspan(datetime.fromtimestamp(ep.start, UTC),
                           datetime.fromtimestamp(ep.end + result.step, UTC),
                           color="tab:orange", alpha=0.18, linewidth=0,
                           label="alarm" if i == 0 and ax is bottom else None)
        fails = _dates(np.asarray(summary.failures))
        for i, f in enumerate(fails):
            for ax in (top, bottom):
                ax.axvline(f, color="tab:red", linestyle=":", linewidth=1.3,
                           label="failure" if i == 0 and ax is top else None)
        if fails:
            idx = np.searchsorted(result.timestamps, np.asarray(summary.failures))
            top.scatter(fails, result.values[idx], marker="X", s=70, color="tab:red", zorder=5)
        if summary.first_crossing is not None:
            c = datetime.fromtimestamp(summary.first_crossing, UTC)
            top.axvline(c, color="tab:purple", linewidth=1.0, alpha=0.8,
                        label="first limit crossing")
            if summary.lead_time is not None:
                top.annotate(f"warned {format_duration(summary.lead_time)} before",
                             xy=(c, s.limit), xytext=(-8, 8), textcoords="offset points",
                             ha="right", color="tab:purple", fontsize=9)
        top.set_ylabel("signal")
        bottom.set_ylabel("HPS (0-100)")
        bottom.set_ylim(-2, 102)
        bottom.set_xlabel("time (UTC)")
        # Keep the forecast band (drawn at t + H) from stretching the axis past the data.
        top.set_xlim(when[0], when[-1])
        bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(bottom.xaxis.get_major_locator()))
        top.legend(loc="upper left", fontsize=8, ncol=2)
        bottom.legend(loc="lower left", fontsize=8)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
        head = title or f"backtest: limit {s.limit:g}, horizon {format_duration(horizon)}"
        lead = (f", warning lead time {format_duration(summary.lead_time)}"
                if summary.lead_time is not None else "")
        top.set_title(f"{head}\n{summary.alarms} of {summary.points} refreshes in alarm{lead}",
                      fontsize=10)
        fig.savefig(out, format="png", dpi=100)
    finally:
        plt.close(fig)  # pyplot keeps every figure alive until closed
