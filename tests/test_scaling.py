"""Scaling-law fits on synthetic data from known laws: recovery within the bootstrap intervals,
held-out prediction, the compute frontier against its analytic exponent, and the plots."""

import dataclasses
import json

import numpy as np
import pytest
from scipy import optimize

from cnn_jax import scaling, scaling_plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# error(N, D) = A N^-ALPHA + B D^-BETA + C, top-1 error as a fraction (0.11 to 0.26 here).
TRUE = {"a": 2.0, "alpha": 0.5, "b": 1.5, "beta": 0.3, "c": 0.05}
WIDTHS = np.geomspace(1e4, 1e6, 5)      # N: parameters
EXAMPLES = np.geomspace(1e3, 6e4, 5)    # D: training examples
SEEDS = 5
NOISE = 0.002                           # seed-to-seed std of the error (0.2 points)
N_BOOT = 200
K = 6.0
ONE_AXIS = {"a": 3.0, "b": 0.35, "c": 0.08}  # error(N) = a N^-b + c, from 0.26 to 0.10
ONE_AXIS_N = np.geomspace(1e3, 1e6, 6)


def law(n, d, p=TRUE):
  return p["a"] * n ** -p["alpha"] + p["b"] * d ** -p["beta"] + p["c"]


def one_axis_runs(seed=0):
  """(n, error) of SEEDS runs at each of ONE_AXIS_N."""
  n = np.repeat(ONE_AXIS_N, SEEDS)
  p = ONE_AXIS
  return n, p["a"] * n ** -p["b"] + p["c"] + NOISE * np.random.default_rng(seed).normal(size=len(n))


def grid_runs(noise=NOISE, seed=0, seeds=SEEDS):
  """(n, d, error) of every run of the 5 x 5 grid, `seeds` runs per grid point."""
  n, d = (np.repeat(v.ravel(), seeds) for v in np.meshgrid(WIDTHS, EXAMPLES, indexing="ij"))
  return n, d, law(n, d) + noise * np.random.default_rng(seed).standard_normal(len(n))


@pytest.fixture(scope="module")
def noisy_fit():
  n, d, error = grid_runs()
  return scaling.fit_joint(n, d, error, n_boot=N_BOOT), (n, d, error)


def test_noise_free_fit_is_exact():
  fit = scaling.fit_joint(*grid_runs(noise=0.0), n_boot=20)
  assert fit.names == scaling.JOINT_NAMES and fit.grid_points == 25 and fit.runs == 125
  for name, true in TRUE.items():
    c = fit.coefficients[name]
    assert c.value == pytest.approx(true, rel=1e-6)
    # identical seeds: every bootstrap refit is the fit itself, a zero-width interval
    assert c.low == pytest.approx(true, rel=1e-6) and c.high == pytest.approx(true, rel=1e-6)
  assert fit.rms_residual < 1e-9 and fit.boot_failed == 0


def test_noisy_fits_hold_the_true_coefficients_in_their_intervals():
  covered = dict.fromkeys(TRUE, 0)
  for seed in range(5):
    fit = scaling.fit_joint(*grid_runs(seed=seed), n_boot=N_BOOT, seed=seed)
    for name, true in TRUE.items():
      c = fit.coefficients[name]
      assert c.low < c.value < c.high  # a real interval around the estimate
      covered[name] += c.low <= true <= c.high
  # 95% intervals: a miss in one of the five data sets is allowed, not two.
  assert all(count >= 4 for count in covered.values()), covered


def test_bootstrap_is_seeded_and_serialisable(noisy_fit):
  fit, (n, d, error) = noisy_fit
  again = scaling.fit_joint(n, d, error, n_boot=N_BOOT)
  assert np.array_equal(fit.samples, again.samples) and fit.samples.shape == (N_BOOT, 5)
  assert scaling.fit_joint(n, d, error, n_boot=N_BOOT, seed=1).coefficients != fit.coefficients
  out = json.loads(json.dumps(fit.to_dict()))
  assert "samples" not in out and out["coefficients"]["alpha"]["value"] == fit.params[1]
  assert out["form"] == scaling.JOINT_FORM and out["d_range"] == [1e3, pytest.approx(6e4)]


def test_prediction_and_band(noisy_fit):
  fit, _ = noisy_fit
  n, d = np.array([1e5, 3e6]), np.array([1e4, 1e5])
  assert fit.predict(n, d) == pytest.approx(law(n, d), abs=0.004)
  low, high = fit.band(n, d)
  assert np.all(low < fit.predict(n, d)) and np.all(fit.predict(n, d) < high)
  assert (high - low)[1] > (high - low)[0]  # wider out of the fitted span


def test_one_axis_fit_and_its_limits():
  fit = scaling.fit_power_law(*one_axis_runs(), n_boot=N_BOOT)
  for name, true in ONE_AXIS.items():
    c = fit.coefficients[name]
    assert c.low <= true <= c.high, (name, c)
    assert c.high - c.low < 0.5 * true  # and the interval says something
  assert fit.d_range is None and fit.form == scaling.ONE_AXIS_FORM
  one_seed = scaling.fit_power_law(WIDTHS, law(WIDTHS, 1e3), n_boot=N_BOOT)
  assert np.isnan(one_seed.coefficients["b"].low) and len(one_seed.samples) == 0
  with pytest.raises(ValueError, match="3 distinct"):
    scaling.fit_power_law(WIDTHS[:2], law(WIDTHS[:2], 1e4))
  with pytest.raises(ValueError, match="3 distinct"):
    n, d, error = grid_runs()
    at = d == EXAMPLES[-1]
    scaling.fit_joint(n[at], d[at], error[at])  # one D: the D term is not determined


def test_holdout_predicts_the_largest_points():
  n, d, error = grid_runs()
  result = scaling.holdout(n, error, d, by="N", n_boot=N_BOOT)
  assert result.fit.n_range[1] == pytest.approx(WIDTHS[-2])  # fitted without the largest N
  assert [p.n for p in result.points] == [pytest.approx(WIDTHS[-1])] * len(EXAMPLES)
  for p in result.points:
    assert abs(p.prediction_error) < 0.005  # 0.5 points, extrapolating N by 3.2x
    assert p.prediction_error == pytest.approx(p.predicted - p.observed.mean)
    assert p.observed.n == SEEDS and p.predicted_low < p.predicted < p.predicted_high
  assert sum(p.inside_observed_interval for p in result.points) >= 3
  largest = scaling.holdout(n, error, d, by="ND", n_boot=N_BOOT)
  assert [(p.n, p.d) for p in largest.points] == [(WIDTHS[-1], pytest.approx(EXAMPLES[-1]))]
  json.dumps(largest.to_dict())


def test_holdout_exposes_a_law_that_breaks():
  n, d, error = grid_runs()
  broken = error + np.where(n == WIDTHS[-1], 0.03, 0.0)  # the largest networks got worse
  result = scaling.holdout(n, broken, d, by="N", n_boot=N_BOOT)
  assert all(p.prediction_error < -0.02 for p in result.points)
  assert not any(p.inside_observed_interval for p in result.points)


def test_one_axis_holdout():
  n, error = one_axis_runs(seed=2)
  result = scaling.holdout(n, error, count=1, n_boot=N_BOOT)
  (point,) = result.points
  assert point.d is None and abs(point.prediction_error) < 0.005
  with pytest.raises(ValueError, match="one-axis"):
    scaling.holdout(n, error, by="ND")


def test_optimum_is_the_minimum_under_the_budget():
  params = np.array([TRUE[k] for k in scaling.JOINT_NAMES])
  budget = 1e11
  n_opt, d_opt, exponent = scaling.optimum(params, [budget], K)
  loss = lambda log_n: law(np.exp(log_n), budget / (K * np.exp(log_n)))
  best = optimize.minimize_scalar(loss, bounds=(0, 30), method="bounded",
                                  options={"xatol": 1e-10})
  assert n_opt[0, 0] == pytest.approx(np.exp(best.x), rel=1e-4)
  assert K * n_opt[0, 0] * d_opt[0, 0] == pytest.approx(budget)
  assert exponent[0] == pytest.approx(TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"]))


def test_frontier_exponent_matches_the_analytic_value():
  analytic = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])  # Hoffmann et al. 2022, eq. (4)
  covered = 0
  for seed in range(5):
    n, d, error = grid_runs(seed=seed)
    fit = scaling.fit_joint(n, d, error, n_boot=N_BOOT, seed=seed)
    e = scaling.frontier(fit, n, d, error, k=K).exponent
    assert e.low < e.value < e.high and e.high - e.low < 0.1
    covered += e.low <= analytic <= e.high
  assert covered >= 4


def test_frontier_observed_best_and_estimated_k(noisy_fit):
  fit, (n, d, error) = noisy_fit
  flops = K * n * d
  result = scaling.frontier(fit, n, d, error, flops=flops)
  assert result.k == pytest.approx(K)
  assert len(result.budgets) == 25 and result.budgets == sorted(result.budgets)
  means = {(a, b): error[(n == a) & (d == b)].mean() for a in WIDTHS for b in EXAMPLES}
  for o in result.observed:
    affordable = [m for (a, b), m in means.items() if K * a * b <= o["budget"] * (1 + 1e-9)]
    assert o["error"] == pytest.approx(min(affordable))
    assert o["flops"] <= o["budget"] * (1 + 1e-9)
  assert len(result.points) == 25 and all(p["flops"] > 0 for p in result.points)
  # This law's optimum wants fewer parameters (or more data) than the grid has at every budget
  assert all(o["n_opt"] < WIDTHS[0] or o["d_opt"] > EXAMPLES[-1] for o in result.optimum)
  assert all(o["extrapolated"] for o in result.optimum)
  wide = dataclasses.replace(fit, n_range=(1e2, 1e7), d_range=(1e3, 1e7))
  assert not any(o["extrapolated"] for o in scaling.frontier(wide, n, d, error, k=K).optimum)
  opt = result.optimum[-1]
  assert opt["n_low"] < opt["n_opt"] < opt["n_high"]
  assert K * opt["n_opt"] * opt["d_opt"] == pytest.approx(result.budgets[-1])
  assert opt["error"] <= result.observed[-1]["error"] + 0.005  # the law's optimum is no worse
  json.dumps(result.to_dict())
  with pytest.raises(ValueError, match="flops"):
    scaling.frontier(fit, n, d, error)


def test_run_points_from_collected_runs():
  final = {"params": 100.0, "train_examples": 50.0, "macs": 1000.0, "epoch": 2.0,
           "eval_top1": 0.9}
  runs = [{"final": final, "seed": 0}, {"final": None, "seed": 1},
          {"final": {**final, "eval_top1": 0.8}, "seed": 2}]
  points = scaling.run_points(runs)
  assert points["n"].tolist() == [100.0, 100.0] and points["seed"].tolist() == [0, 2]
  assert points["error"] == pytest.approx([0.1, 0.2])
  assert points["flops"].tolist() == [3 * 1000.0 * 2.0 * 50.0] * 2


def test_plots_write_pngs(tmp_path, noisy_fit):
  fit, (n, d, error) = noisy_fit
  held = scaling.holdout(n, error, d, by="N", n_boot=50)
  one = scaling.fit_power_law(n[d == EXAMPLES[0]], error[d == EXAMPLES[0]], n_boot=50)
  frontier = scaling.frontier(fit, n, d, error, k=K)
  paths = [tmp_path / "joint.png", tmp_path / "one.png", tmp_path / "frontier.png"]
  scaling_plots.plot_fit(held.fit, str(paths[0]), n, error, d, held_out=held)
  scaling_plots.plot_fit(one, str(paths[1]), n[d == EXAMPLES[0]], error[d == EXAMPLES[0]])
  scaling_plots.plot_frontier(frontier, str(paths[2]), title="synthetic")
  for path in paths:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
