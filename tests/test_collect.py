"""Collecting a study: the per-variant table with its intervals, the declared comparisons and
their verdicts, the convergence check, the one-axis and joint power-law fits and the plots, on
fake runs."""

import csv
import json
import os

import numpy as np
import pytest

from cnn_jax import collect, stats
from cnn_jax.comparisons import Comparison

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The synthetic scaling law: top-1 error (a fraction) = A N^-B + C.
A, B, C = 2.0, 0.5, 0.05
WIDTHS = (4, 8, 16, 32, 64)
NOISE = 0.002
# images/s logged by seed 0 and 1: medians 650 and 530 once the first (compiling) record is out.
RATES = ((5.0, 600.0, 650.0, 700.0), (7.0, 500.0, 520.0, 540.0, 560.0))


def write_run(study, name, variant, seed, final=None, rates=RATES[0],
              eval_top1=(0.7, 0.8), metrics=True, data_seed=None):
  """A run directory: study_run.json and a metrics.jsonl (training records every half epoch, an
  evaluation per epoch), ending in `final` if given; no metrics.jsonl unless `metrics`."""
  run_dir = os.path.join(study, name)
  os.makedirs(run_dir)
  spec = {"variant": variant, "overrides": {"model.width": variant}, "seed": seed}
  if data_seed is not None:
    spec["data_seed"] = data_seed
  with open(os.path.join(run_dir, "study_run.json"), "w") as f:
    json.dump(spec, f)
  if not metrics:
    return
  records = []
  for i, rate in enumerate(rates):
    records.append({"step": 50 * (i + 1), "epoch": 0.5 * (i + 1), "loss": 2.0 / (i + 1),
                    "top1": 0.8, "lr": 1e-3, "images_per_sec": rate})
  for epoch, top1 in enumerate(eval_top1, 1):
    records.append({"step": 100 * epoch, "epoch": float(epoch), "eval_top1": top1,
                    "eval_top5": 0.99, "eval_loss": 0.5})
  if final is not None:
    records.append({"final": True, "step": 200, "epoch": 2.0, "wall_time_s": 120.0,
                    "layout": "replicated", "params_sha256": "0" * 64, **final})
  with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)


def final_record(params, top1, top5=0.99, loss=0.3, train_examples=60000):
  return {"params": params, "macs": 3 * params, "eval_top1": top1, "eval_top5": top5,
          "eval_loss": loss, "train_examples": train_examples}


@pytest.fixture
def width_study(tmp_path):
  """5 widths x 2 seeds on the power law plus noise, one unfinished third seed of the widest,
  and a variant whose only run has not logged anything yet. Returns (study, errors by width)."""
  study = str(tmp_path / "study")
  rng = np.random.default_rng(0)
  errors = {}
  for w in WIDTHS:
    params = 100 * w * w
    errors[w] = A * params ** -B + C + NOISE * rng.standard_normal(2)
    for seed, error in enumerate(errors[w]):
      write_run(study, f"w{w:03d}_s{seed}", f"width={w}", seed,
                final=final_record(params, 1 - error, top5=0.999 - error / 10, loss=error * 3),
                rates=RATES[seed])
  write_run(study, "w064_s2", "width=64", 2)  # killed: no final record
  write_run(study, "w128_s0", "width=128", 0, metrics=False)
  return study, errors


def read_csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def test_table_rows_means_stds_and_unfinished(width_study, tmp_path):
  study, errors = width_study
  out = str(tmp_path / "out")
  result = collect.collect(study, out, "width sweep", scaling="params")
  rows = result["rows"]
  # Variants in the order of their runs' directory names; an unlogged run is a row of its own.
  assert [r["variant"] for r in rows] == [f"width={w}" for w in WIDTHS] + ["width=128"]
  assert [(r["finished"], r["runs"]) for r in rows] == [(2, 2)] * 4 + [(2, 3), (0, 1)]
  assert result["unfinished"] == ["w064_s2", "w128_s0"]
  assert rows[-2]["unfinished"] == ["w064_s2"] and rows[-2]["seeds"] == [0, 1]
  for row, w in zip(rows, WIDTHS):
    top1 = 100 * errors[w]
    assert row["params"] == 100 * w * w and row["macs"] == 300 * w * w
    assert row["top1_error_pct"] == pytest.approx(top1.mean())
    assert row["top1_error_pct_std"] == pytest.approx(top1.std(ddof=1))
    interval = stats.mean_interval(top1)  # Student t over the 2 seeds: 12.7 standard errors
    assert (row["top1_error_pct_low"], row["top1_error_pct_high"]) == pytest.approx(
        (interval.low, interval.high))
    assert row["top1_error_pct_high"] - row["top1_error_pct_low"] > 2 * top1.std(ddof=1)
    assert row["top5_error_pct"] == pytest.approx(100 * (0.001 + errors[w] / 10).mean())
    assert row["loss"] == pytest.approx(3 * errors[w].mean())
    assert row["loss_std"] == pytest.approx(3 * errors[w].std(ddof=1))
    # Medians 650 and 530 with the first (compiling) record left out; a mean 590 over the runs.
    assert row["images_per_sec"] == pytest.approx(590.0)
    assert row["wall_time_s"] == pytest.approx(120.0)
  empty = rows[-1]
  assert empty["top1_error_pct"] is None and empty["params"] is None and empty["seeds"] == []

  table = read_csv(os.path.join(out, "table.csv"))
  assert [t["variant"] for t in table] == [r["variant"] for r in rows]
  assert float(table[0]["top1_error_pct"]) == pytest.approx(100 * errors[4].mean())
  assert float(table[0]["top1_error_pct_std"]) == pytest.approx(100 * errors[4].std(ddof=1))
  interval = stats.mean_interval(100 * errors[4])
  assert float(table[0]["top1_error_pct_low"]) == pytest.approx(interval.low)
  assert float(table[0]["top1_error_pct_high"]) == pytest.approx(interval.high)
  assert float(table[0]["loss_low"]) == pytest.approx(
      stats.mean_interval(3 * errors[4]).low)
  assert table[4]["runs"] == "3" and table[4]["finished"] == "2" and table[4]["seeds"] == "0 1"
  assert table[5]["top1_error_pct"] == ""

  md = open(os.path.join(out, "table.md")).read()
  assert md.startswith("# width sweep\n")
  first = next(line for line in md.splitlines() if line.startswith("| width=4 |"))
  top1 = 100 * errors[4]
  cell = stats.format_interval(stats.mean_interval(top1))
  assert f"| 2/2 | 0, 1 | 1,600 | 4.800K | {cell} |" in first and "[" in cell
  # The fake eval curve falls from 30% (step 100) to 20% (step 200): -4 points over the last
  # 20% of training (steps 160 to 200), while the interval is ~0.3 points wide.
  assert "| 590 | 2m00s | no (-4.00) |" in first
  assert "Not converged (5 of 6 arms" in md
  assert next(line for line in md.splitlines() if line.startswith("| width=64 |")).split(
      " | ")[1] == "2/3"
  assert "| width=128 | 0/1 | - | - | - | - |" in md
  assert "Unfinished (2 of 12 runs): w064_s2, w128_s0" in md


def test_power_law_fit_recovers_exponent(width_study, tmp_path):
  study, _ = width_study
  out = str(tmp_path / "out")
  fit = collect.collect(study, out, "width sweep", scaling="params")["fit"]
  assert "reason" not in fit
  assert fit["points"] == 10 and fit["distinct_n"] == 5
  assert 0 < fit["b_err"] < 0.3
  assert abs(fit["b"] - B) < max(2 * fit["b_err"], 0.1)
  assert abs(fit["c"] - C) < max(2 * fit["c_err"], 0.01)
  assert fit["rms_residual"] < 2 * NOISE
  # scaling.fit_power_law's percentile intervals over seeds (with 2 seeds a resample has at
  # most 3 distinct means per point, so they are narrow: not checked against B itself here;
  # test_scaling.py checks their coverage with 5 seeds)
  boot = fit["bootstrap"]
  assert boot["b"]["low"] < boot["b"]["value"] < boot["b"]["high"]
  assert boot["b"]["value"] == pytest.approx(fit["b"], rel=0.05)
  with open(os.path.join(out, "fit.json")) as f:
    saved = json.load(f)
  assert saved["bootstrap"] == boot
  assert {k: v for k, v in saved.items() if k != "bootstrap"} == pytest.approx(
      {k: v for k, v in fit.items() if k != "bootstrap"})
  md = open(os.path.join(out, "table.md")).read()
  assert "error(N) = a N^-b + c (N = params, 10 runs" in md
  assert f"b = {fit['b']:.3g} ± {fit['b_err']:.2g}" in md
  assert f"b [{boot['b']['low']:.3g}, {boot['b']['high']:.3g}]" in md


def test_fit_of_another_law_at_a_large_scale():
  """Not a constant answer: b = 1 over N in the millions (the fit's own scaling of N)."""
  n = np.repeat(np.geomspace(1e6, 1e8, 6), 2)
  error = 5e4 / n + 0.1 + 1e-4 * np.random.default_rng(1).standard_normal(len(n))
  fit = collect.fit_power_law(n, error, "params")
  assert fit["b"] == pytest.approx(1.0, abs=0.05)
  assert fit["a"] == pytest.approx(5e4, rel=0.5)
  assert fit["c"] == pytest.approx(0.1, abs=1e-3)
  assert fit["a_err"] > 0 and fit["c_err"] > 0


def test_plots_exist(width_study, tmp_path):
  study, _ = width_study
  out = str(tmp_path / "out")
  collect.collect(study, out, "width sweep", scaling="params")
  for name in ("error_vs_params.png", "error_vs_macs.png", "curves.png"):
    with open(os.path.join(out, name), "rb") as f:
      data = f.read()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000, name
  assert not os.path.exists(os.path.join(out, "error_vs_train_examples.png"))


def test_too_few_sizes_give_a_reason(tmp_path):
  study, out = str(tmp_path / "study"), str(tmp_path / "out")
  for i, examples in enumerate((1000, 4000, 16000)):
    for seed in range(2):
      write_run(study, f"n{i}_s{seed}", f"examples={examples}", seed,
                final=final_record(5000, 0.9 - 0.01 * seed + 0.02 * i, train_examples=examples))
  fit = collect.collect(study, out, "data sweep", scaling="train_examples")["fit"]
  assert "b" not in fit
  assert "3 distinct train_examples values" in fit["reason"]
  with open(os.path.join(out, "fit.json")) as f:
    assert json.load(f)["reason"] == fit["reason"]
  assert "no fit, 3 distinct train_examples values" in open(os.path.join(out, "table.md")).read()
  for name in ("error_vs_train_examples.png", "error_vs_params.png", "curves.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0


def test_ablation_single_seed_has_no_std_and_no_fit(tmp_path):
  study, out = str(tmp_path / "study"), str(tmp_path / "out")
  write_run(study, "norm=batch_s0", "norm=batch", 0, final=final_record(1000, 0.9))
  write_run(study, "norm=none_s0", "norm=none", 0, final=final_record(1000, 0.875))
  result = collect.collect(study, out, "norm ablation")
  assert result["fit"] is None and not os.path.exists(os.path.join(out, "fit.json"))
  assert [r["variant"] for r in result["rows"]] == ["norm=batch", "norm=none"]
  assert result["rows"][1]["top1_error_pct_std"] is None
  md = open(os.path.join(out, "table.md")).read()
  assert "| norm=none | 1/1 | 0 | 1,000 | 3.000K | 12.50 | 1.00 | 0.3000 |" in md
  assert "±" not in md and "Unfinished" not in md


def test_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="no run directories"):
    collect.collect(str(tmp_path), str(tmp_path / "out"), "empty")
  with pytest.raises(ValueError, match="scaling"):
    collect.collect(str(tmp_path), str(tmp_path / "out"), "x", scaling="width")


def comparison_study(root, gap, seeds=(0, 1, 2), flat=True):
  """Arms 'lrn' and 'none' over `seeds`: none's top-1 error 20% + seed noise, lrn's `gap`
  points lower with the same noise plus a little of its own. `flat`: the eval curve has
  settled (last two evaluations equal), else it falls by 5 points at the end."""
  study = str(root)
  noise = {0: -0.5, 1: 0.1, 2: 0.4, 3: 0.0}
  own = {0: 0.2, 1: -0.3, 2: 0.1, 3: 0.0}
  for seed in seeds:
    for variant, error in (("none", 20 + noise[seed]), ("lrn", 20 - gap + noise[seed] + own[seed])):
      top1 = 1 - error / 100
      curve = (top1, top1) if flat else (top1 - 0.05, top1)
      write_run(study, f"{variant}_s{seed}", variant, seed, eval_top1=curve,
                final=final_record(1000, top1))
  return study


def comparison_values(gap, seeds=(0, 1, 2)):
  noise = {0: -0.5, 1: 0.1, 2: 0.4, 3: 0.0}
  own = {0: 0.2, 1: -0.3, 2: 0.1, 3: 0.0}
  return ([20 - gap + noise[s] + own[s] for s in seeds], [20 + noise[s] for s in seeds])


CLAIM = Comparison(a="lrn", b="none", metric="top1_error", claim="lower",
                   source="Krizhevsky et al. 2012, Sec. 3.3")


def test_a_comparison_gives_the_paired_difference_interval_and_verdict(tmp_path):
  study = comparison_study(tmp_path / "study", gap=1.5)
  out = str(tmp_path / "out")
  result = collect.collect(study, out, "lrn", comparisons=(CLAIM,))
  (row,) = result["comparisons"]
  lrn, none = comparison_values(1.5)
  expected = stats.compare(dict(enumerate(lrn)), dict(enumerate(none)))  # paired: same seeds
  assert expected.paired and row["comparison"]["test"] == "paired_t"
  assert row["comparison"]["diff"] == pytest.approx(-1.5)
  assert (row["comparison"]["low"], row["comparison"]["high"]) == pytest.approx(
      (expected.low, expected.high))
  assert row["comparison"]["pvalue"] == pytest.approx(expected.pvalue)
  assert row["verdict"]["verdict"] == "reproduces"
  with open(os.path.join(out, "comparisons.json")) as f:
    saved = json.load(f)
  assert saved[0]["verdict"]["verdict"] == "reproduces"
  assert saved[0]["source"] == "Krizhevsky et al. 2012, Sec. 3.3"
  md = open(os.path.join(out, "table.md")).read()
  assert "## Comparisons with the papers' claims" in md
  assert "| lrn vs none | top1_error (validation) | -1.50 [" in md and "**reproduces** |" in md
  # Settled curves: every arm converged.
  assert [r["converged"] for r in result["rows"]] == [True, True]
  assert "Not converged" not in md


def test_the_verdict_flips_when_the_interval_crosses_zero(tmp_path):
  verdicts = {}
  for gap in (1.5, 0.1, -1.5):
    out = str(tmp_path / f"out{gap}")
    collect.collect(comparison_study(tmp_path / f"study{gap}", gap), out, "lrn",
                    comparisons=(CLAIM,))
    with open(os.path.join(out, "comparisons.json")) as f:
      (row,) = json.load(f)
    low, high = -row["comparison"]["high"], -row["comparison"]["low"]  # of none - lrn
    verdicts[gap] = row["verdict"]["verdict"]
    assert (low > 0) == (verdicts[gap] == "reproduces")
    assert (high < 0) == (verdicts[gap] == "contradicts")
  assert verdicts == {1.5: "reproduces", 0.1: "inconclusive", -1.5: "contradicts"}


def test_a_claimed_size_and_unpaired_seeds(tmp_path):
  """A claimed 5-point gain against a measured 1.5 is contradicted; arms on different seeds
  are compared by Welch's test."""
  study = str(tmp_path / "study")
  lrn, none = comparison_values(1.5, seeds=(0, 1, 2))
  for seed, e in zip((0, 1, 2), lrn):
    write_run(study, f"lrn_s{seed}", "lrn", seed, final=final_record(1000, 1 - e / 100))
  for seed, e in zip((3, 4, 5), none):
    write_run(study, f"none_s{seed}", "none", seed, final=final_record(1000, 1 - e / 100))
  big = Comparison(a="lrn", b="none", claim="lower", size=5.0)
  (row,) = collect.collect(study, str(tmp_path / "out"), "x", comparisons=(big,))["comparisons"]
  assert row["comparison"]["test"] == "welch" and not row["comparison"]["paired"]
  expected = stats.compare(lrn, none)
  assert row["comparison"]["low"] == pytest.approx(expected.low)
  assert row["verdict"]["verdict"] == stats.verdict(expected, "lower", 5.0).verdict
  assert row["verdict"]["verdict"] == "contradicts"


def test_an_unsettled_curve_is_flagged(tmp_path):
  study = comparison_study(tmp_path / "study", gap=1.5, flat=False)
  result = collect.collect(study, str(tmp_path / "out"), "x")
  assert [r["converged"] for r in result["rows"]] == [False, False]
  # 5 points between steps 100 and 200, so 2 over the last 20% (steps 160 to 200).
  assert result["rows"][0]["curve_change_pct"] == pytest.approx(-2.0)
  assert result["comparisons"] == []
  assert not os.path.exists(os.path.join(tmp_path / "out", "comparisons.json"))
  md = open(os.path.join(tmp_path / "out", "table.md")).read()
  assert "Not converged (2 of 2 arms" in md


def test_separate_data_seeds_pair_on_both_seeds(tmp_path):
  study = str(tmp_path / "study")
  for variant, error in (("lrn", 18.0), ("none", 20.0)):
    for seed, data_seed in ((0, 0), (0, 1), (1, 0)):
      e = error + 0.3 * seed - 0.2 * data_seed + (0.1 if variant == "lrn" and seed else 0)
      write_run(study, f"{variant}_s{seed}_d{data_seed}", variant, seed, data_seed=data_seed,
                final=final_record(1000, 1 - e / 100))
  result = collect.collect(study, str(tmp_path / "out"), "x", comparisons=(CLAIM,))
  assert result["rows"][0]["seeds"] == [0, "0/1", "1/0"]
  (row,) = result["comparisons"]
  assert row["comparison"]["paired"] and row["comparison"]["n_a"] == 3


# error(N, D) = JA N^-JALPHA + JB D^-JBETA + JC: the joint law the width x data study fits.
JOINT = {"a": 2.0, "alpha": 0.5, "b": 1.5, "beta": 0.3, "c": 0.05}
JOINT_N = (1e4, 4e4, 1.6e5, 6.4e5)
JOINT_D = (1000, 4000, 16000, 60000)


def test_joint_fit_recovers_the_law_within_its_intervals(tmp_path):
  study, out = str(tmp_path / "study"), str(tmp_path / "out")
  rng, p = np.random.default_rng(3), JOINT
  for i, n in enumerate(JOINT_N):
    for j, d in enumerate(JOINT_D):
      for seed in range(4):
        error = p["a"] * n ** -p["alpha"] + p["b"] * d ** -p["beta"] + p["c"]
        error += NOISE * rng.standard_normal()
        final = {**final_record(int(n), 1 - error, train_examples=d), "macs": 10 * int(n),
                 "epoch": 3.0}
        write_run(study, f"n{i}_d{j}_s{seed}", f"n{i},d{j}", seed, final=final)
  result = collect.collect(study, out, "width x data", scaling="joint", n_boot=100)
  fit = result["fit"]
  assert "reason" not in fit and fit["fit"]["runs"] == 64 and fit["fit"]["grid_points"] == 16
  coefficients = fit["fit"]["coefficients"]
  for name in ("alpha", "beta", "c"):
    c = coefficients[name]
    assert c["low"] < p[name] < c["high"], (name, c)
    assert c["high"] - c["low"] < 0.5 * p[name] + 0.02, (name, c)
  # Held out: the largest N x D, predicted from the other 15 grid points.
  (held,) = fit["holdout"]["points"]
  assert (held["n"], held["d"]) == (JOINT_N[-1], JOINT_D[-1])
  truth = p["a"] * held["n"] ** -p["alpha"] + p["b"] * held["d"] ** -p["beta"] + p["c"]
  assert abs(held["predicted"] - truth) < 0.01
  # The frontier on the runs' FLOPs: 3 x MACs x epochs x D = 90 N D, so k = 90.
  assert fit["frontier"]["k"] == pytest.approx(90.0)
  exponent = fit["frontier"]["exponent"]
  assert exponent["value"] == pytest.approx(p["beta"] / (p["alpha"] + p["beta"]), abs=0.1)
  with open(os.path.join(out, "fit.json")) as f:
    assert json.load(f)["fit"]["coefficients"] == coefficients
  md = open(os.path.join(out, "table.md")).read()
  a = coefficients["alpha"]
  assert f"alpha = {a['value']:.3g} [{a['low']:.3g}, {a['high']:.3g}]" in md
  assert "Held out (largest N x D" in md and "Compute frontier" in md
  for name in ("fit.png", "frontier.png", "error_vs_train_examples.png"):
    with open(os.path.join(out, name), "rb") as f:
      assert f.read().startswith(PNG_SIGNATURE), name


def test_a_joint_grid_too_small_gives_a_reason(tmp_path):
  study, out = str(tmp_path / "study"), str(tmp_path / "out")
  for i, n in enumerate(JOINT_N[:2]):
    for seed in range(2):
      final = {**final_record(int(n), 0.8 + 0.01 * seed), "epoch": 1.0}
      write_run(study, f"n{i}_s{seed}", f"n{i}", seed, final=final)
  fit = collect.collect(study, out, "tiny", scaling="joint", n_boot=10)["fit"]
  assert "3 distinct values per axis" in fit["reason"]
  assert not os.path.exists(os.path.join(out, "fit.png"))
  assert "no fit" in open(os.path.join(out, "table.md")).read()


def test_one_evaluation_cannot_show_convergence(tmp_path):
  study, out = str(tmp_path / "study"), str(tmp_path / "out")
  for seed, top1 in enumerate((0.8, 0.82)):
    write_run(study, f"a_s{seed}", "a", seed, eval_top1=(top1,), final=final_record(10, top1))
  (row,) = collect.collect(study, out, "x")["rows"]
  assert row["converged"] is False and row["curve_change_pct"] is None
  assert "| no (one evaluation) |" in open(os.path.join(out, "table.md")).read()

