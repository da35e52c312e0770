"""The collector reports test metrics where the runs have a test split, validation where not."""

import os

import pytest

from cnn_jax import collect
from test_collect import CLAIM, final_record, write_run


def test_tables_report_test_and_fall_back_to_validation(tmp_path):
  """Final records with test metrics: every cell and comparison reads them (headers say test);
  the convergence check still reads the validation curve. One run without them: validation."""
  study = str(tmp_path / "study")
  for seed, (val, test) in enumerate(((0.80, 0.70), (0.82, 0.71), (0.81, 0.69))):
    for variant, shift in (("lrn", 0.02), ("none", 0.0)):
      final = {**final_record(1000, val + shift), "best_eval_top1": val + shift,
               "test_top1": test + shift, "test_top5": 0.95, "test_loss": 2 * test,
               "test_split": "test"}
      write_run(study, f"{variant}_s{seed}", variant, seed, final=final,
                eval_top1=(val + shift, val + shift))
  result = collect.collect(study, str(tmp_path / "out"), "x", comparisons=(CLAIM,))
  row = result["rows"][0]
  assert row["split"] == "test"
  assert row["top1_error_pct"] == pytest.approx(100 * (1 - (0.70 + 0.71 + 0.69) / 3 - 0.02))
  assert row["loss"] == pytest.approx(2 * 0.70) and row["converged"] is True
  (claim,) = result["comparisons"]
  assert claim["split"] == "test" and claim["comparison"]["diff"] == pytest.approx(-2.0)
  md = open(os.path.join(tmp_path / "out", "table.md")).read()
  assert "test top-1 error % [95% CI]" in md and "top1_error (test)" in md
  write_run(study, "none_s3", "none", 3, final=final_record(1000, 0.8))  # no test split
  result = collect.collect(study, str(tmp_path / "out2"), "x", comparisons=(CLAIM,))
  assert result["rows"][0]["split"] == "validation"
  assert result["rows"][0]["top1_error_pct"] == pytest.approx(100 * (1 - 0.81 - 0.02))
  assert result["comparisons"][0]["split"] == "validation"
