"""The collector's joint scaling law for a width x data-fraction study (Study(scaling="joint")).

From the finished runs (`scaling.run_points`: N = params, D = train_examples, error = 1 - final
top-1, test where the runs have a test split, else validation; each run's training FLOPs = 3 x
MACs x epochs x D) it fits error(N, D) = a N^-alpha + b D^-beta + c (Rosenfeld et al. 2019;
Hoffmann et al. 2022, Sec. 3.3, eq. (2)) with bootstrap intervals over seeds
(`scaling.fit_joint`), validates it by holding out the grid points of the largest N x D and
predicting them from the rest (`scaling.holdout(by="ND")`), and gives the compute frontier,
N_opt(C) under C = k N D (Hoffmann et al. 2022, eq. (4); `scaling.frontier` with the runs' own
FLOPs, k estimated from them). It writes fit.json and the plots fit.png (band, extrapolation
marked, held-out points) and frontier.png. A grid too small to fit gives {"reason"} in
fit.json instead, and no plots.
"""

from __future__ import annotations

import json
import os

from cnn_jax import scaling, scaling_plots, stats


def collect_joint(runs: list[dict], out_dir: str, title: str,
                  n_boot: int = scaling.N_BOOT, error_key: str = "eval_top1") -> dict:
  """Fits, validates and plots the joint law of `runs` (cnn_jax.collect.find_runs) into
  out_dir, the error being 1 - final[error_key] (test_top1 where the runs have a test split);
  returns what fit.json holds: {"form", "fit", "holdout", "frontier"} (JSON-safe), or
  {"form", "reason"}, and "holdout_reason" where only the held-out check could not be made."""
  p = scaling.run_points(runs, error_key)
  split = "test" if error_key.startswith("test_") else "validation"
  out = {"form": scaling.JOINT_FORM, "runs": int(len(p["n"])),
         "error": f"{split} top-1 error as a fraction"}
  try:
    fit = scaling.fit_joint(p["n"], p["d"], p["error"], n_boot=n_boot)
  except ValueError as e:
    out["reason"] = str(e)
  else:
    out["fit"] = fit.to_dict()
    held = None
    try:
      held = scaling.holdout(p["n"], p["error"], p["d"], by="ND", n_boot=n_boot)
      out["holdout"] = held.to_dict()
    except ValueError as e:
      out["holdout_reason"] = str(e)
    front = scaling.frontier(fit, p["n"], p["d"], p["error"], flops=p["flops"])
    out["frontier"] = front.to_dict()
    scaling_plots.plot_fit(held.fit if held is not None else fit,
                           os.path.join(out_dir, "fit.png"), p["n"], p["error"], p["d"],
                           held_out=held, title=title)
    scaling_plots.plot_frontier(front, os.path.join(out_dir, "frontier.png"), title=title)
  with open(os.path.join(out_dir, "fit.json"), "w", encoding="utf-8") as f:
    json.dump(stats.json_safe(out), f, indent=2)
  return stats.json_safe(out)


def _coefficient(name: str, c: dict) -> str:
  if c["low"] is None:
    return f"{name} = {c['value']:.3g}"
  return f"{name} = {c['value']:.3g} [{c['low']:.3g}, {c['high']:.3g}]"


def lines(result: dict) -> list[str]:
  """The joint fit for table.md: the coefficients with their 95% bootstrap intervals, the
  held-out check and the frontier's exponent; or why there is none."""
  if "reason" in result:
    return [f"{result['form']}: no fit, {result['reason']}."]
  fit = result["fit"]
  coefficients = ", ".join(_coefficient(k, fit["coefficients"][k]) for k in fit["names"])
  text = [f"{result['form']} (N = params, D = train_examples, {fit['runs']} runs on "
          f"{fit['grid_points']} grid points, {result['error']}): {coefficients} (95% "
          f"bootstrap intervals over seeds; rms residual {fit['rms_residual']:.3g})."]
  if "holdout" in result:
    for point in result["holdout"]["points"]:
      o = point["observed"]
      text.append(f"Held out (largest N x D, fitted without it): N = {point['n']:,.0f}, "
                  f"D = {point['d']:,.0f}: predicted {point['predicted']:.4f}, observed "
                  f"{o['mean']:.4f}" + ("" if o["low"] is None else
                                        f" [{o['low']:.4f}, {o['high']:.4f}]")
                  + f" ({'inside' if point['inside_observed_interval'] else 'outside'} the "
                  "observed interval).")
  else:
    text.append(f"No held-out check: {result.get('holdout_reason')}")
  e = result["frontier"]["exponent"]
  text.append(f"Compute frontier (C = k N D, k = {result['frontier']['k']:.3g} from the runs' "
              f"FLOPs): N_opt ∝ C^{_coefficient('e', e)[4:]}.")
  return text
