"""The plots of `cnn_jax.scaling`: a fitted law against the runs (its bootstrap band, the
extrapolated region marked, held-out points) and the compute frontier."""

from __future__ import annotations

import math

import numpy as np

from cnn_jax.scaling import Frontier, Holdout, LawFit


def _figure(panels=1):
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  fig = figure.Figure(figsize=(6.5 * panels, 4.8), layout="constrained")
  backend_agg.FigureCanvasAgg(fig)
  return fig, fig.subplots(1, panels, squeeze=False)[0]


def plot_fit(fit: LawFit, path: str, n, error, d=None, held_out: Holdout | None = None,
             extend: float = 2.0, title: str = ""):
  """Error (%) against N (log x) as a PNG at `path`: the runs, the law (one curve per D for the
  joint law) with its bootstrap band, solid over the fitted span of N and D and dashed beyond
  it, where the extrapolated region is shaded; held-out points (a `Holdout`) drawn hollow with
  their observed intervals. The curves reach `extend` x the largest fitted N."""
  n, y = np.asarray(n, float), 100 * np.asarray(error, float)
  fig, (ax,) = _figure()
  n_max = max(fit.n_range[1] * extend, n.max())
  ds = [None] if d is None else list(np.unique(np.asarray(d, float)))
  for i, dv in enumerate(ds):
    color = f"C{i % 10}"
    sel = np.ones(len(n), bool) if dv is None else np.asarray(d, float) == dv
    ax.scatter(n[sel], y[sel], s=14, alpha=0.5, color=color,
               label="runs" if dv is None else f"D = {dv:,.0f}")
    grid = np.geomspace(fit.n_range[0], n_max, 200)
    args = (grid,) if dv is None else (grid, np.full_like(grid, dv))
    pred, (low, high) = 100 * fit.predict(*args), fit.band(*args)
    in_d = dv is None or fit.d_range[0] <= dv <= fit.d_range[1]
    inside = (grid <= fit.n_range[1]) & in_d
    ax.plot(np.where(inside, grid, np.nan), pred, "-", color=color)
    ax.plot(np.where(inside, np.nan, grid), pred, "--", color=color)
    ax.fill_between(grid, 100 * low, 100 * high, color=color, alpha=0.2, lw=0)
  ax.axvspan(fit.n_range[1], n_max, color="0.85", alpha=0.5, lw=0,
             label="extrapolated (beyond the fitted N; dashed)")
  for i, p in enumerate(held_out.points if held_out is not None else []):
    o = p.observed
    yerr = [[100 * (o.mean - o.low)], [100 * (o.high - o.mean)]] if math.isfinite(o.low) else None
    ax.errorbar([p.n], [100 * o.mean], yerr=yerr, fmt="o", mfc="none", color="k", capsize=3,
                label=None if i else f"held out: observed ({100 * o.level:g}% interval)")
    ax.plot([p.n], [100 * p.predicted], "kx", label=None if i else "held out: predicted")
  terms = ", ".join(f"{k} = {c.value:.3g}" for k, c in fit.coefficients.items())
  ax.set(xscale="log", xlabel="parameters N", ylabel="error (%)", title=title or fit.form)
  ax.text(0.02, 0.02, f"{fit.form}: {terms}", transform=ax.transAxes, fontsize=7)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=7)
  fig.savefig(path, format="png", dpi=100)


def plot_frontier(result: Frontier, path: str, title: str = ""):
  """The frontier as a PNG at `path`: error (%) against training FLOPs C with every grid point,
  the best observed per budget and the law's error at N_opt(C); N against C with the best
  observed N and N_opt(C) with its bootstrap band. The law is dashed where it extrapolates."""
  fig, (err_ax, n_ax) = _figure(2)
  budgets, opt = np.array(result.budgets), result.optimum
  obs = [o for o in result.observed if o["n"] is not None]
  outside = np.array([o["extrapolated"] for o in opt])
  err_ax.scatter([p["flops"] for p in result.points], [100 * p["error"] for p in result.points],
                 s=12, color="0.6", label="grid points (mean over seeds)")
  err_ax.step([o["budget"] for o in obs], [100 * o["error"] for o in obs], "C0-", where="post",
              label="best observed within budget")
  n_ax.plot([o["budget"] for o in obs], [o["n"] for o in obs], "C0o", label="best observed N")
  e = result.exponent
  for ax, values, label in ((err_ax, [100 * o["error"] for o in opt], "law at N_opt(C)"),
                            (n_ax, [o["n_opt"] for o in opt],
                             f"N_opt ∝ C^{e.value:.3g} [{e.low:.3g}, {e.high:.3g}]")):
    ax.plot(budgets, np.where(outside, np.nan, values), "C1-", label=label)
    ax.plot(budgets, np.where(outside, values, np.nan), "C1--", label="(extrapolated)")
  n_ax.fill_between(budgets, [o["n_low"] for o in opt], [o["n_high"] for o in opt], color="C1",
                    alpha=0.2, lw=0)
  err_ax.set(ylabel="error (%)")
  n_ax.set(yscale="log", ylabel="parameters N")
  for ax in (err_ax, n_ax):
    ax.set(xscale="log", xlabel=f"training FLOPs C (C = {result.k:.3g} N D)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(title or "compute frontier")
  fig.savefig(path, format="png", dpi=100)
