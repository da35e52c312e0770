"""benchmarks/time_to_accuracy.py: reading the time to a target off a run's history, medians
over rounds that did not all reach it, and the Keras worker on a tiny run."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import time_to_accuracy as tta  # noqa: E402


def history(*points):
  return {"history": [{"epoch": 0.5 * (i + 1), "test_top1": a, "train_s": s, "wall_s": s + 10}
                      for i, (a, s) in enumerate(points)]}


def test_first_at_is_the_first_evaluation_at_the_target():
  h = history((0.90, 10.0), (0.915, 20.0), (0.905, 30.0), (0.921, 40.0))["history"]
  assert tta.first_at(h, 0.91)["train_s"] == 20.0
  assert tta.first_at(h, 0.92)["epoch"] == 2.0
  assert tta.first_at(h, 0.93) is None


def test_summary_medians_over_the_rounds_that_reached_the_target():
  rounds = [history((0.91, 12.0), (0.92, 30.0)), history((0.91, 10.0), (0.915, 20.0)),
            history((0.91, 14.0), (0.925, 26.0))]
  s = tta.summarise(rounds, (0.91, 0.92))
  assert s["0.91"] == {"reached": 3, "train_s": 12.0, "wall_s": 22.0, "epoch": 0.5}
  assert s["0.92"]["reached"] == 2 and s["0.92"]["train_s"] == 28.0
  assert s["final_test_top1"] == 0.92 and s["final_test_top1_range"] == [0.915, 0.925]
  table = tta.table({"fast": s}, (0.91, 0.92))
  assert "| fast | 3 | 12.0 | 22.0 | 28.0 (2/3) | 38.0 | 92.00% (91.50 to 92.50) |" in table


def test_keras_names_what_it_cannot_reproduce():
  assert tta.keras_unsupported(tta.load("configs/simple_cnn.py")) == []
  assert tta.keras_unsupported(tta.load("configs/simple_cnn.py:long")) == []
  cfg = tta.load("configs/simple_cnn.py", {"optim.weight_decay": 1e-4,
                                           "data.preprocess.pad": 2})
  assert tta.keras_unsupported(cfg) == ["data.preprocess.pad", "optim.weight_decay"]


def test_keras_worker_trains_the_recipe_on_a_tiny_run():
  r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "time_to_accuracy.py"),
                      "--keras_worker", "configs/simple_cnn.py", "--smoke", "--seed=1"],
                     capture_output=True, text=True, timeout=600, cwd=ROOT)
  assert r.returncode == 0, r.stderr[-2000:]
  out = json.loads(r.stdout.strip().splitlines()[-1])
  h = out["history"]
  assert len(h) >= 2 and all(0 < p["train_s"] < p["wall_s"] for p in h)
  assert [p["train_s"] for p in h] == sorted(p["train_s"] for p in h)
  assert h[-1]["test_top1"] > 0.3  # 0.1 epoch of Adam already beats chance (0.1) by far
