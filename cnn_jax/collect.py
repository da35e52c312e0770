"""A study's results: one table row per variant, a power-law fit for scaling studies, and plots.

A study directory holds one sub-directory per training run, each with `study_run.json`
({"variant", "overrides", "seed"}) and the run's `metrics.jsonl`. Runs of one variant differ only
in their seed; a run whose log has no final record is unfinished and is counted, not averaged.

  python -m cnn_jax.collect STUDY_DIR OUT_DIR --title "..." [--scaling params|train_examples]

writes table.csv, table.md, fit.json (scaling studies) and the PNG plots to OUT_DIR.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import math
import os
import statistics
import warnings

import numpy as np

from cnn_jax import metrics

RUN_FILE = "study_run.json"
SCALING_KEYS = ("params", "train_examples")
FORM = "error(N) = a N^-b + c"
MIN_DISTINCT_N = 4
# (column, heading) of table.csv; a mean +- std pair per metric over a variant's finished seeds.
CSV_COLUMNS = ("variant", "finished", "runs", "seeds", "params", "macs", "top1_error_pct",
               "top1_error_pct_std", "top5_error_pct", "top5_error_pct_std", "eval_loss",
               "eval_loss_std", "images_per_sec", "wall_time_s")


def find_runs(study_dir: str) -> list[dict]:
  """Every run under `study_dir` (a folder holding study_run.json), in the study's arm order
  (its "order"), then by path.

  Each run is {"name", "dir", "variant", "seed", "overrides", "records", "final"}; "final" is the
  log's final record, None for an unfinished run (or one with no metrics.jsonl yet).
  """
  runs = []
  for folder, subdirs, files in os.walk(study_dir):
    subdirs.sort()
    if RUN_FILE not in files:
      continue
    subdirs[:] = []  # a run's own folders (checkpoints, tensorboard) hold no runs
    with open(os.path.join(folder, RUN_FILE), encoding="utf-8") as f:
      spec = json.load(f)
    name = os.path.relpath(folder, study_dir)
    log = os.path.join(folder, metrics.JSONL)
    records = metrics.read_jsonl(log) if os.path.exists(log) else []
    final = next((r for r in reversed(records) if r.get("final")), None)
    runs.append({"name": name, "dir": folder, "variant": spec.get("variant", name),
                 "order": spec.get("order", 0),  # the arm's place in the study file
                 "seed": spec.get("seed"), "overrides": spec.get("overrides", {}),
                 "records": [r for r in records if not r.get("final")], "final": final})
  if not runs:
    raise FileNotFoundError(f"no run directories (holding {RUN_FILE}) under {study_dir}")
  return sorted(runs, key=lambda r: (r["order"], r["name"]))


def by_variant(runs: list[dict]) -> dict[str, list[dict]]:
  """The runs grouped by variant, variants in the order their first run appears."""
  groups = collections.OrderedDict()
  for run in runs:
    groups.setdefault(run["variant"], []).append(run)
  return groups


def train_images_per_sec(records: list[dict]) -> float | None:
  """The median logged images/s, the first record (which includes compilation) left out."""
  rates = [r["images_per_sec"] for r in records if _number(r.get("images_per_sec"))][1:]
  return statistics.median(rates) if rates else None


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _mean_std(values) -> tuple[float | None, float | None]:
  """Mean and sample standard deviation (None with fewer than two values)."""
  values = [v for v in values if _number(v)]
  if not values:
    return None, None
  return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def variant_row(variant: str, runs: list[dict]) -> dict:
  """The table row of one variant: its finished runs' means (and sample stds over seeds)."""
  done = [r for r in runs if r["final"] is not None]
  finals = [r["final"] for r in done]
  top1, top1_std = _mean_std([100 * (1 - f["eval_top1"]) for f in finals if "eval_top1" in f])
  top5, top5_std = _mean_std([100 * (1 - f["eval_top5"]) for f in finals if "eval_top5" in f])
  loss, loss_std = _mean_std([f.get("eval_loss") for f in finals])
  return {"variant": variant, "finished": len(done), "runs": len(runs),
          "seeds": [r["seed"] for r in done],
          "params": next((f["params"] for f in finals if "params" in f), None),
          "macs": next((f["macs"] for f in finals if "macs" in f), None),
          "top1_error_pct": top1, "top1_error_pct_std": top1_std,
          "top5_error_pct": top5, "top5_error_pct_std": top5_std,
          "eval_loss": loss, "eval_loss_std": loss_std,
          "images_per_sec": _mean_std([train_images_per_sec(r["records"]) for r in done])[0],
          "wall_time_s": _mean_std([f.get("wall_time_s") for f in finals])[0],
          "unfinished": [r["name"] for r in runs if r["final"] is None]}


def _pm(mean, std, digits) -> str:
  if mean is None:
    return "-"
  return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _human(n) -> str:
  """1125484 -> '1.125M'."""
  for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
    if n >= scale:
      return f"{n / scale:.3f}{unit}"
  return str(n)


def markdown_table(rows: list[dict]) -> str:
  """The rows of `collect` as a markdown table, errors and loss as mean ± std over seeds."""
  lines = ["| variant | runs | seeds | params | MACs | top-1 error % | top-5 error % | eval loss "
           "| train images/s | wall time |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    cells = [r["variant"], f"{r['finished']}/{r['runs']}",
             ", ".join(str(s) for s in r["seeds"]) or "-",
             "-" if r["params"] is None else f"{r['params']:,}",
             "-" if r["macs"] is None else _human(r["macs"]),
             _pm(r["top1_error_pct"], r["top1_error_pct_std"], 2),
             _pm(r["top5_error_pct"], r["top5_error_pct_std"], 2),
             _pm(r["eval_loss"], r["eval_loss_std"], 4),
             "-" if r["images_per_sec"] is None else f"{r['images_per_sec']:,.0f}",
             "-" if r["wall_time_s"] is None else metrics.format_duration(r["wall_time_s"])]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def scaling_points(runs: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
  """(N, top-1 error as a fraction) of every finished run whose final record has `key`."""
  points = [(r["final"][key], 1 - r["final"]["eval_top1"]) for r in runs
            if r["final"] is not None and _number(r["final"].get(key))
            and _number(r["final"].get("eval_top1"))]
  return np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)


def fit_power_law(n: np.ndarray, error: np.ndarray, key: str) -> dict:
  """error(N) = a N^-b + c by least squares (a > 0, b > 0, 0 <= c <= 1), with standard errors.

  N is divided by its geometric mean for the fit (a well-scaled problem); a and its standard
  error are mapped back to N itself. Gives {"key", "reason"} instead when it cannot fit.
  """
  from scipy import optimize  # pylint: disable=g-import-not-at-top
  out = {"key": key, "form": FORM, "points": int(len(n)), "distinct_n": int(len(set(n)))}
  if out["distinct_n"] < MIN_DISTINCT_N:
    return {**out, "reason": f"{out['distinct_n']} distinct {key} values among the finished "
                             f"runs; a 3-parameter fit needs at least {MIN_DISTINCT_N}"}
  n0 = float(np.exp(np.mean(np.log(n))))
  x = n / n0
  # Start: c just under the best error, b from the log-log slope of what is left above it.
  c0 = 0.5 * float(error.min())
  slope = np.polyfit(np.log(x), np.log(np.maximum(error - c0, 1e-12)), 1)[0]
  b0 = float(np.clip(-slope, 0.05, 5.0))
  a0 = float(np.clip(np.exp(np.mean(np.log(np.maximum(error - c0, 1e-12)) + b0 * np.log(x))),
                     1e-9, 1e9))
  model = lambda x, a, b, c: a * x ** -b + c
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", optimize.OptimizeWarning)  # covariance not estimable
      (a, b, c), cov = optimize.curve_fit(model, x, error, p0=(a0, b0, c0),
                                          bounds=([0, 0, 0], [np.inf, 10, 1]), maxfev=20000)
  except (RuntimeError, ValueError, optimize.OptimizeWarning) as e:
    return {**out, "reason": f"curve_fit failed: {e}"}
  if not np.all(np.isfinite(cov)):
    return {**out, "reason": "curve_fit gave no finite covariance (parameters not determined)"}
  # a_N = a n0^b: its variance by the delta method, gradient (n0^b, a n0^b ln n0, 0).
  grad = np.array([n0 ** b, a * n0 ** b * math.log(n0), 0.0])
  a_err = float(math.sqrt(max(grad @ cov @ grad, 0.0)))
  b_err, c_err = (float(math.sqrt(max(cov[i, i], 0.0))) for i in (1, 2))
  residual = error - model(x, a, b, c)
  return {**out, "a": float(a * n0 ** b), "a_err": a_err, "b": float(b), "b_err": b_err,
          "c": float(c), "c_err": c_err, "rms_residual": float(np.sqrt(np.mean(residual ** 2)))}


def fit_line(fit: dict) -> str:
  """The fit as one markdown line: its parameters ± standard errors, or why there is none."""
  if "reason" in fit:
    return f"{FORM} (N = {fit['key']}): no fit, {fit['reason']}."
  terms = ", ".join(f"{p} = {fit[p]:.3g} ± {fit[p + '_err']:.2g}" for p in "bac")
  return f"{FORM} (N = {fit['key']}, {fit['points']} runs, top-1 error as a fraction): {terms}"


def _figure(panels=1):
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  fig = figure.Figure(figsize=(6.5 * panels, 4.8), layout="constrained")
  backend_agg.FigureCanvasAgg(fig)
  return fig, fig.subplots(1, panels, squeeze=False)[0]


def _save(fig, path):
  fig.savefig(path, format="png", dpi=100)


def plot_error_vs(groups: dict, key: str, path: str, title: str, fit: dict | None = None):
  """Top-1 error (%) of every finished run against final[key] (log x), each variant's mean ±
  std labelled, and the fitted curve when `fit` has one."""
  fig, (ax,) = _figure()
  for i, (variant, runs) in enumerate(groups.items()):
    n, error = scaling_points(runs, key)
    if not len(n):
      continue
    color = f"C{i % 10}"
    ax.scatter(n, 100 * error, s=14, alpha=0.45, color=color)
    std = 100 * error.std(ddof=1) if len(n) > 1 else 0.0
    ax.errorbar(n.mean(), 100 * error.mean(), yerr=std, fmt="o", color=color, capsize=3,
                label=variant)
    ax.annotate(variant, (n.mean(), 100 * error.mean()), textcoords="offset points",
                xytext=(5, 5), fontsize=8)
  if fit is not None and "b" in fit:
    n, _ = scaling_points([r for runs in groups.values() for r in runs], key)
    grid = np.geomspace(n.min(), n.max(), 200)
    ax.plot(grid, 100 * (fit["a"] * grid ** -fit["b"] + fit["c"]), "k--",
            label=f"fit: b = {fit['b']:.3g} ± {fit['b_err']:.2g}, c = {100 * fit['c']:.3g}%")
  if ax.has_data():
    ax.set_xscale("log")
    ax.legend(fontsize=8)
  else:
    ax.text(0.5, 0.5, f"no finished run with {key}", ha="center", transform=ax.transAxes)
  ax.set(xlabel=key, ylabel="top-1 error (%)", title=title)
  ax.grid(True, which="both", alpha=0.3)
  _save(fig, path)


def _mean_curve(runs: list[dict], key: str, scale=1.0, offset=0.0):
  """(epochs, mean over the runs logging that epoch of offset + scale * record[key])."""
  values = collections.defaultdict(list)
  for run in runs:
    for r in run["records"]:
      if _number(r.get(key)) and _number(r.get("epoch")):
        values[round(r["epoch"], 6)].append(offset + scale * r[key])
  epochs = sorted(values)
  return epochs, [statistics.mean(values[e]) for e in epochs]


def plot_curves(groups: dict, path: str, title: str):
  """Eval top-1 error (%) and training loss against epoch, each variant's mean over seeds."""
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
  for ax, ylabel in ((err_ax, "eval top-1 error (%)"), (loss_ax, "training loss")):
    ax.set(xlabel="epoch", ylabel=ylabel, title=ylabel)
    ax.grid(True, alpha=0.3)
    if ax.has_data():
      ax.legend(fontsize=8)
  _save(fig, path)


def collect(study_dir: str, out_dir: str, title: str, scaling: str | None = None) -> dict:
  """Writes the study's table.csv, table.md, plots and (scaling studies) fit.json to out_dir.

  `scaling` names the final-record key that is N in error(N) = a N^-b + c ("params" or
  "train_examples"); None for an ablation. Returns {"rows", "fit", "unfinished"}.
  """
  if scaling is not None and scaling not in SCALING_KEYS:
    raise ValueError(f"scaling must be one of {SCALING_KEYS} or None, got {scaling!r}")
  runs = find_runs(study_dir)
  groups = by_variant(runs)
  rows = [variant_row(v, rs) for v, rs in groups.items()]
  unfinished = [r["name"] for r in runs if r["final"] is None]
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "table.csv"), "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({**r, "seeds": " ".join(map(str, r["seeds"]))} for r in rows)
  fit = None
  if scaling is not None:
    fit = fit_power_law(*scaling_points(runs, scaling), scaling)
    with open(os.path.join(out_dir, "fit.json"), "w", encoding="utf-8") as f:
      json.dump(fit, f, indent=2)
  text = [f"# {title}", "", markdown_table(rows)]
  if fit is not None:
    text += ["", fit_line(fit)]
  if unfinished:
    text += ["", f"Unfinished ({len(unfinished)} of {len(runs)} runs): {', '.join(unfinished)}"]
  with open(os.path.join(out_dir, "table.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(text) + "\n")
  for key in ("params", "macs"):
    plot_error_vs(groups, key, os.path.join(out_dir, f"error_vs_{key}.png"), title,
                  fit if scaling == key else None)
  if scaling == "train_examples":
    plot_error_vs(groups, scaling, os.path.join(out_dir, "error_vs_train_examples.png"), title,
                  fit)
  plot_curves(groups, os.path.join(out_dir, "curves.png"), title)
  return {"rows": rows, "fit": fit, "unfinished": unfinished}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("study_dir")
  parser.add_argument("out_dir")
  parser.add_argument("--title", default="")
  parser.add_argument("--scaling", choices=SCALING_KEYS)
  args = parser.parse_args(argv)
  result = collect(args.study_dir, args.out_dir, args.title or args.study_dir, args.scaling)
  print(markdown_table(result["rows"]))
  if result["fit"] is not None:
    print(fit_line(result["fit"]))


if __name__ == "__main__":
  main()
