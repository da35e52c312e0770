"""Collecting a study: the per-variant table, the power-law fit and the plots, on fake runs."""

import csv
import json
import os

import numpy as np
import pytest

from cnn_jax import collect

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The synthetic scaling law: top-1 error (a fraction) = A N^-B + C.
A, B, C = 2.0, 0.5, 0.05
WIDTHS = (4, 8, 16, 32, 64)
NOISE = 0.002
# images/s logged by seed 0 and 1: medians 650 and 530 once the first (compiling) record is out.
RATES = ((5.0, 600.0, 650.0, 700.0), (7.0, 500.0, 520.0, 540.0, 560.0))


def write_run(study, name, variant, seed, final=None, rates=RATES[0],
              eval_top1=(0.7, 0.8), metrics=True):
  """A run directory: study_run.json and a metrics.jsonl (training records every half epoch, an
  evaluation per epoch), ending in `final` if given; no metrics.jsonl unless `metrics`."""
  run_dir = os.path.join(study, name)
  os.makedirs(run_dir)
  with open(os.path.join(run_dir, "study_run.json"), "w") as f:
    json.dump({"variant": variant, "overrides": {"model.width": variant}, "seed": seed}, f)
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
    assert row["top5_error_pct"] == pytest.approx(100 * (0.001 + errors[w] / 10).mean())
    assert row["eval_loss"] == pytest.approx(3 * errors[w].mean())
    assert row["eval_loss_std"] == pytest.approx(3 * errors[w].std(ddof=1))
    # Medians 650 and 530 with the first (compiling) record left out; a mean 590 over the runs.
    assert row["images_per_sec"] == pytest.approx(590.0)
    assert row["wall_time_s"] == pytest.approx(120.0)
  empty = rows[-1]
  assert empty["top1_error_pct"] is None and empty["params"] is None and empty["seeds"] == []

  table = read_csv(os.path.join(out, "table.csv"))
  assert [t["variant"] for t in table] == [r["variant"] for r in rows]
  assert float(table[0]["top1_error_pct"]) == pytest.approx(100 * errors[4].mean())
  assert float(table[0]["top1_error_pct_std"]) == pytest.approx(100 * errors[4].std(ddof=1))
  assert table[4]["runs"] == "3" and table[4]["finished"] == "2" and table[4]["seeds"] == "0 1"
  assert table[5]["top1_error_pct"] == ""

  md = open(os.path.join(out, "table.md")).read()
  assert md.startswith("# width sweep\n")
  first = next(line for line in md.splitlines() if line.startswith("| width=4 |"))
  top1 = 100 * errors[4]
  assert f"| 2/2 | 0, 1 | 1,600 | 4.800K | {top1.mean():.2f} ± {top1.std(ddof=1):.2f} |" in first
  assert "| 590 | 2m00s |" in first
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
  with open(os.path.join(out, "fit.json")) as f:
    assert json.load(f) == pytest.approx(fit)
  md = open(os.path.join(out, "table.md")).read()
  assert "error(N) = a N^-b + c (N = params, 10 runs" in md
  assert f"b = {fit['b']:.3g} ± {fit['b_err']:.2g}" in md


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
