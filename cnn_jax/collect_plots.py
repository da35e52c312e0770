"""The plots of a collected study: each run's top-1 error against a quantity (parameters, MACs,
training examples), each variant's mean with its 95% interval over seeds and the fitted
one-axis law; and the eval-error and training-loss curves, each variant's mean over seeds."""

from __future__ import annotations

import collections
import math
import statistics

import numpy as np

from cnn_jax import metrics, stats


def is_number(value) -> bool:
  """A finite int or float (not a bool)."""
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def scaling_points(runs: list[dict], key: str,
                   error_key: str = "eval_top1") -> tuple[np.ndarray, np.ndarray]:
  """(N, top-1 error as a fraction: 1 - final[error_key], e.g. test_top1) of every finished
  run whose final record has `key`."""
  points = [(r["final"][key], 1 - r["final"][error_key]) for r in runs
            if r["final"] is not None and is_number(r["final"].get(key))
            and is_number(r["final"].get(error_key))]
  return np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)


def _figure(panels=1):
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  fig = figure.Figure(figsize=(6.5 * panels, 4.8), layout="constrained")
  backend_agg.FigureCanvasAgg(fig)
  return fig, fig.subplots(1, panels, squeeze=False)[0]


def _save(fig, path):
  fig.savefig(path, format="png", dpi=100)


def plot_error_vs(groups: dict, key: str, path: str, title: str, fit: dict | None = None,
                  split: str = "validation"):
  """Top-1 error (%) on `split` (test or validation) of every finished run against final[key]
  (log x), each variant's mean with its 95% interval labelled, and the fitted curve when `fit`
  has one."""
  error_key = ("test_" if split == "test" else "eval_") + "top1"
  fig, (ax,) = _figure()
  for i, (variant, runs) in enumerate(groups.items()):
    n, error = scaling_points(runs, key, error_key)
    if not len(n):
      continue
    color = f"C{i % 10}"
    ax.scatter(n, 100 * error, s=14, alpha=0.45, color=color)
    half = 100 * stats.mean_interval(error).half_width if len(n) > 1 else 0.0
    ax.errorbar(n.mean(), 100 * error.mean(), yerr=half, fmt="o", color=color, capsize=3,
                label=variant)
    ax.annotate(variant, (n.mean(), 100 * error.mean()), textcoords="offset points",
                xytext=(5, 5), fontsize=8)
  if fit is not None and "b" in fit:
    n, _ = scaling_points([r for runs in groups.values() for r in runs], key, error_key)
    grid = np.geomspace(n.min(), n.max(), 200)
    ax.plot(grid, 100 * (fit["a"] * grid ** -fit["b"] + fit["c"]), "k--",
            label=f"fit: b = {fit['b']:.3g} ± {fit['b_err']:.2g}, c = {100 * fit['c']:.3g}%")
  if ax.has_data():
    ax.set_xscale("log")
    ax.legend(fontsize=8)
  else:
    ax.text(0.5, 0.5, f"no finished run with {key}", ha="center", transform=ax.transAxes)
  ax.set(xlabel=key, ylabel=f"{split} top-1 error (%)", title=title)
  ax.grid(True, which="both", alpha=0.3)
  _save(fig, path)


def _mean_curve(runs: list[dict], key: str, scale=1.0, offset=0.0):
  """(epochs, mean over the runs logging that epoch of offset + scale * record[key])."""
  values = collections.defaultdict(list)
  for run in runs:
    for r in run["records"]:
      if is_number(r.get(key)) and is_number(r.get("epoch")):
        values[round(r["epoch"], 6)].append(offset + scale * r[key])
  epochs = sorted(values)
  return epochs, [statistics.mean(values[e]) for e in epochs]


def plot_curves(groups: dict, path: str, title: str):
  """Validation top-1 error (%) (the logged evaluations) and training loss against epoch, each
  variant's mean over seeds."""
  fig, (err_ax, loss_ax) = _figure(2)
  for i, (variant, runs) in enumerate(groups.items()):
    color = f"C{i % 10}"
    epochs, error = _mean_curve(runs, "eval_top1", scale=-100, offset=100)
    if epochs:
      err_ax.plot(epochs, error, "o-", ms=3, color=color, label=variant)
    loss_key = next((k for k in metrics.LOSS_KEYS if _mean_curve(runs, k)[0]), None)
    if loss_key:
      loss_ax.plot(*_mean_curve(runs, loss_key), color=color, lw=1, label=variant)
  fig.suptitle(title)  # once over both panels: a long title would overlap as two
  for ax, ylabel in ((err_ax, "validation top-1 error (%)"), (loss_ax, "training loss")):
    ax.set(xlabel="epoch", ylabel=ylabel, title=ylabel)
    ax.grid(True, alpha=0.3)
    if ax.has_data():
      ax.legend(fontsize=8)
  _save(fig, path)
