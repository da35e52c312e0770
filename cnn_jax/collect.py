"""A study's results: one table row per variant, its declared comparisons, a power-law fit for
scaling studies, and plots.

A study directory holds one sub-directory per training run, each with `study_run.json`
({"variant", "overrides", "seed", "data_seed"}) and the run's `metrics.jsonl`. Runs of one
variant differ only in their seeds; a run whose log has no final record is unfinished and is
counted, not averaged. Every cell that averages seeds is the mean with its 95% Student-t
interval (`stats.mean_interval`) over the variant's finished seeds, of the test metrics
(`test_top1`, ...: the checkpoint best on validation, tested once) where every finished run
has them, else of the last validation evaluation (`eval_*`); the headers say which
(`comparisons.reported_split`). Each variant's validation-error curve (the logged evaluations)
is checked for convergence against its final validation top-1 interval (`stats.convergence`).
Tuning runs (study_run.json "tuning": true, under tune/) are never averaged: `tuning.md` gives
their validation errors and the chosen values, which are a column of the table.

  python -m cnn_jax.collect STUDY_DIR OUT_DIR --title "..." [--scaling params|train_examples|joint]

writes table.csv, table.md, comparisons.json (studies declaring comparisons), fit.json (scaling
studies) and the PNG plots to OUT_DIR.
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

from cnn_jax import comparisons as claims
from cnn_jax import joint_fit, metrics, stats, tuning
from cnn_jax import scaling as laws
from cnn_jax.collect_plots import is_number as _number
from cnn_jax.collect_plots import plot_curves, plot_error_vs, scaling_points

RUN_FILE = "study_run.json"
SCALING_KEYS = ("params", "train_examples")
SCALINGS = (*SCALING_KEYS, "joint")
FORM = "error(N) = a N^-b + c"
MIN_DISTINCT_N = 4
# The metrics averaged over seeds: (column, comparisons.METRICS name), read on the split the
# table reports (its "split" column: test or validation).
AVERAGED = (("top1_error_pct", "top1_error"), ("top5_error_pct", "top5_error"),
            ("loss", "loss"))
# table.csv: per averaged metric its mean, sample std and 95% interval [low, high] over seeds.
CSV_COLUMNS = ("variant", "finished", "runs", "seeds", "tuned", "params", "macs", "split",
               *[c + suffix for c, _ in AVERAGED for suffix in ("", "_std", "_low", "_high")],
               "images_per_sec", "wall_time_s", "converged", "curve_change_pct")


def find_runs(study_dir: str, tuning_runs: bool = False) -> list[dict]:
  """Every run under `study_dir` (a folder holding study_run.json), in the study's arm order
  (its "order"), then by path: the study's own runs, or with `tuning_runs` only its tuning
  runs (study_run.json "tuning": true).

  Each run is {"name", "dir", "variant", "seed", "overrides", "tuned", "point", "records",
  "final"}; "final" is the log's final record, None for an unfinished run (or one with no
  metrics.jsonl yet); "tuned" the values a tuning phase chose for it, "point" a tuning run's
  grid point.
  """
  runs = []
  for folder, subdirs, files in os.walk(study_dir):
    subdirs.sort()
    if RUN_FILE not in files:
      continue
    subdirs[:] = []  # a run's own folders (checkpoints, tensorboard) hold no runs
    with open(os.path.join(folder, RUN_FILE), encoding="utf-8") as f:
      spec = json.load(f)
    if bool(spec.get("tuning")) != tuning_runs:
      continue
    name = os.path.relpath(folder, study_dir)
    log = os.path.join(folder, metrics.JSONL)
    records = metrics.read_jsonl(log) if os.path.exists(log) else []
    final = next((r for r in reversed(records) if r.get("final")), None)
    runs.append({"name": name, "dir": folder, "variant": spec.get("variant", name),
                 "order": spec.get("order", 0),  # the arm's place in the study file
                 "seed": spec.get("seed"), "data_seed": spec.get("data_seed", spec.get("seed")),
                 "overrides": spec.get("overrides", {}), "tuned": spec.get("tuned") or {},
                 "point": spec.get("point") or {},
                 "records": [r for r in records if not r.get("final")], "final": final})
  if not runs and not tuning_runs:
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


def _stacked(final: dict | None) -> int:
  """The number of runs trained in the run's stacked group (cnn_jax.stacked), 1 if alone."""
  n = (final or {}).get("stacked_runs", 1)
  return n if isinstance(n, int) and n > 0 else 1


def _group_rate(run: dict) -> float | None:
  """A run's training images/s, as its group's where it was stacked (a stacked run logs its
  share)."""
  rate = train_images_per_sec(run["records"])
  return None if rate is None else rate * _stacked(run["final"])


def _per_run(seconds, final: dict):
  """A run's wall time, its share of its group's where it was stacked."""
  return seconds / _stacked(final) if _number(seconds) else seconds


def _mean_std(values) -> tuple[float | None, float | None]:
  """Mean and sample standard deviation (None with fewer than two values)."""
  values = [v for v in values if _number(v)]
  if not values:
    return None, None
  return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _interval(runs: list[dict], metric: str, split: str):
  values = list(claims.metric_values(runs, metric, split).values())
  return stats.mean_interval(values) if values else None


def tuned_text(tuned: dict) -> str:
  """{"optim.lr": 0.02} -> 'lr=0.02'; '' for none."""
  return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in tuned.items())


def variant_row(variant: str, runs: list[dict], split: str = "validation") -> dict:
  """The table row of one variant: per averaged metric on `split` the `stats.Interval` over
  its finished seeds ("intervals") and its mean, std, low and high as columns (None where
  undefined), the values tuned for it, and the convergence of its validation-error curve
  against its final validation top-1 interval's half-width."""
  done = [r for r in runs if r["final"] is not None]
  finals = [r["final"] for r in done]
  row = {"variant": variant, "finished": len(done), "runs": len(runs), "split": split,
         "seeds": [r["seed"] if r.get("data_seed", r["seed"]) == r["seed"]
                   else f"{r['seed']}/{r['data_seed']}" for r in done],
         "tuned": next((tuned_text(r["tuned"]) for r in runs if r.get("tuned")), ""),
         "params": next((f["params"] for f in finals if "params" in f), None),
         "macs": next((f["macs"] for f in finals if "macs" in f), None), "intervals": {}}
  for column, metric in AVERAGED:
    interval = _interval(done, metric, split)
    row["intervals"][column] = interval
    for suffix, field in (("", "mean"), ("_std", "std"), ("_low", "low"), ("_high", "high")):
      v = getattr(interval, field) if interval is not None else None
      row[column + suffix] = v if v is not None and math.isfinite(v) else None
  top1 = _interval(done, "top1_error", "validation")  # the curve's own split
  check = claims.arm_convergence(done, top1.half_width) if top1 is not None else None
  row.update(convergence=check,
             converged=None if check is None or not math.isfinite(check.half_width)
             else check.converged,
             curve_change_pct=None if check is None or not math.isfinite(check.change)
             else check.change,
             images_per_sec=_mean_std([_group_rate(r) for r in done])[0],
             wall_time_s=_mean_std([_per_run(f.get("wall_time_s"), f) for f in finals])[0],
             unfinished=[r["name"] for r in runs if r["final"] is None])
  return row


def _cell(interval, digits) -> str:
  return "-" if interval is None else stats.format_interval(interval, digits)


def _converged_cell(row) -> str:
  if row["converged"] is None:
    return "-"
  if row["converged"]:
    return "yes"
  change = row["curve_change_pct"]
  return "no (one evaluation)" if change is None else f"no ({change:+.2f})"


def _human(n) -> str:
  """1125484 -> '1.125M'."""
  for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
    if n >= scale:
      return f"{n / scale:.3f}{unit}"
  return str(n)


def markdown_table(rows: list[dict]) -> str:
  """The rows of `collect` as a markdown table: errors and loss on the rows' split (test, or
  validation for runs without a test split; the headers say which) as the mean [95% interval]
  over the seeds listed (seed/data seed where they differ); the tuned values where a tuning
  phase chose them; converged: whether the mean validation error moved less than its final
  interval's half-width over the last 20% of training (else by how much, in points)."""
  split = rows[0]["split"] if rows else "validation"
  tuned = any(r.get("tuned") for r in rows)
  lines = ["| variant | runs | seeds | " + ("tuned | " if tuned else "") + "params | MACs | "
           f"{split} top-1 error % [95% CI] | {split} top-5 error % [95% CI] | {split} loss "
           "[95% CI] | train images/s | wall time | converged |",
           "|---|---:|---|" + ("---|" if tuned else "") + "---:|---:|---:|---:|---:|---:|---:|---|"]
  for r in rows:
    cells = [r["variant"], f"{r['finished']}/{r['runs']}",
             ", ".join(str(s) for s in r["seeds"]) or "-",
             *([r.get("tuned") or "-"] if tuned else []),
             "-" if r["params"] is None else f"{r['params']:,}",
             "-" if r["macs"] is None else _human(r["macs"]),
             _cell(r["intervals"]["top1_error_pct"], 2),
             _cell(r["intervals"]["top5_error_pct"], 2),
             _cell(r["intervals"]["loss"], 4),
             "-" if r["images_per_sec"] is None else f"{r['images_per_sec']:,.0f}",
             "-" if r["wall_time_s"] is None else metrics.format_duration(r["wall_time_s"]),
             _converged_cell(r)]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


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


def bootstrap_intervals(n: np.ndarray, error: np.ndarray, n_boot: int = laws.N_BOOT) -> dict:
  """{"a"|"b"|"c": {"value", "low", "high"}}: the 95% percentile-bootstrap intervals of
  `scaling.fit_power_law` (seeds resampled within each N); {"reason"} where it cannot fit."""
  try:
    law = laws.fit_power_law(n, error, n_boot=n_boot)
  except ValueError as e:
    return {"reason": str(e)}
  return {k: c.to_dict() for k, c in law.coefficients.items()}


def fit_line(fit: dict) -> str:
  """The fit as one markdown line: its parameters ± standard errors and, where there is one,
  their 95% bootstrap intervals; or why there is no fit."""
  if "reason" in fit:
    return f"{FORM} (N = {fit['key']}): no fit, {fit['reason']}."
  terms = ", ".join(f"{p} = {fit[p]:.3g} ± {fit[p + '_err']:.2g}" for p in "bac")
  line = f"{FORM} (N = {fit['key']}, {fit['points']} runs, top-1 error as a fraction): {terms}"
  boot = fit.get("bootstrap", {})
  if "reason" not in boot and all(boot.get(p, {}).get("low") is not None for p in "bac"):
    line += "; 95% bootstrap intervals over seeds: " + ", ".join(
        f"{p} [{boot[p]['low']:.3g}, {boot[p]['high']:.3g}]" for p in "bac")
  return line


def _write_csv(path: str, rows: list[dict]):
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({**r, "seeds": " ".join(map(str, r["seeds"]))} for r in rows)


def _json(path: str, value):
  with open(path, "w", encoding="utf-8") as f:
    json.dump(stats.json_safe(value), f, indent=2)


def collect(study_dir: str, out_dir: str, title: str, scaling: str | None = None,
            comparisons=(), n_boot: int = laws.N_BOOT) -> dict:
  """Writes the study's table.csv, table.md, plots, comparisons.json (when `comparisons`, a
  tuple of `comparisons.Comparison`, is not empty) and fit.json (scaling studies) to out_dir.

  `scaling` names the final-record key that is N in error(N) = a N^-b + c ("params" or
  "train_examples"), or "joint" for error(N, D) over (params, train_examples) (see
  `cnn_jax.joint_fit`); None for an ablation. `n_boot` bootstrap refits give the fits'
  intervals. Returns {"rows", "fit", "comparisons", "unfinished"}.
  """
  if scaling is not None and scaling not in SCALINGS:
    raise ValueError(f"scaling must be one of {SCALINGS} or None, got {scaling!r}")
  runs = find_runs(study_dir)
  groups = by_variant(runs)
  split = claims.reported_split(runs)
  rows = [variant_row(v, rs, split) for v, rs in groups.items()]
  unfinished = [r["name"] for r in runs if r["final"] is None]
  os.makedirs(out_dir, exist_ok=True)
  _write_csv(os.path.join(out_dir, "table.csv"), rows)
  text = [f"# {title}", "", markdown_table(rows), "",
          "Errors and loss on the test split (the checkpoint best on validation, tested once)"
          if split == "test" else "Errors and loss on the validation split (the runs have no "
          "test split)"]
  tune_runs = find_runs(study_dir, tuning_runs=True)
  if tune_runs:
    tuning.write_markdown(study_dir, tune_runs, os.path.join(out_dir, "tuning.md"), title)
    text[-1] += "; the tuned values were chosen per arm on validation (tuning.md)"
  text[-1] += "."
  stale = [r["variant"] for r in rows if r["converged"] is False]
  if stale:
    text += ["", f"Not converged ({len(stale)} of {len(rows)} arms: the mean validation error "
                 "moved "
                 "by more than the top-1 interval's half-width over the last 20% of training; "
                 f"train longer before reading their differences): {', '.join(stale)}"]
  results = claims.evaluate(groups, comparisons, split)
  if results:
    _json(os.path.join(out_dir, "comparisons.json"), results)
    text += ["", "## Comparisons with the papers' claims", "",
             "a − b over seeds with its 95% interval (Welch's t, or paired t where both arms "
             "ran the same seeds); the verdict is `stats.verdict`'s rule on that interval.", "",
             claims.markdown(results)]
  fit = None
  if scaling == "joint":
    fit = joint_fit.collect_joint(runs, out_dir, title, n_boot=n_boot,
                                  error_key=claims.record_key("top1_error", split))
    text += ["", *joint_fit.lines(fit)]
  elif scaling is not None:
    n, error = scaling_points(runs, scaling, claims.record_key("top1_error", split))
    fit = fit_power_law(n, error, scaling)
    if "reason" not in fit:
      fit["bootstrap"] = bootstrap_intervals(n, error, n_boot)
    _json(os.path.join(out_dir, "fit.json"), fit)
    text += ["", fit_line(fit)]
  if unfinished:
    text += ["", f"Unfinished ({len(unfinished)} of {len(runs)} runs): {', '.join(unfinished)}"]
  with open(os.path.join(out_dir, "table.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(text) + "\n")
  one_axis = fit if scaling in SCALING_KEYS else None
  for key in ("params", "macs"):
    plot_error_vs(groups, key, os.path.join(out_dir, f"error_vs_{key}.png"), title,
                  one_axis if scaling == key else None, split)
  if scaling in ("train_examples", "joint"):
    plot_error_vs(groups, "train_examples", os.path.join(out_dir, "error_vs_train_examples.png"),
                  title, one_axis, split)
  plot_curves(groups, os.path.join(out_dir, "curves.png"), title)
  return {"rows": rows, "fit": fit, "comparisons": results, "unfinished": unfinished}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("study_dir")
  parser.add_argument("out_dir")
  parser.add_argument("--title", default="")
  parser.add_argument("--scaling", choices=SCALINGS)
  args = parser.parse_args(argv)
  result = collect(args.study_dir, args.out_dir, args.title or args.study_dir, args.scaling)
  print(markdown_table(result["rows"]))
  if result["fit"] is not None:
    print("\n".join(joint_fit.lines(result["fit"])) if args.scaling == "joint"
          else fit_line(result["fit"]))


if __name__ == "__main__":
  main()
