"""A study's plan: every run's training FLOPs (3 x MACs x images trained, MACs from the model
itself), its predicted time from a throughput, and the total; the split sizes it counts."""

import json

import pytest

from cnn_jax import inspect, models, studyplan
from cnn_jax.errors import UserError
from cnn_jax import study as study_module
from cnn_jax.study import Study

SIMPLE = "configs/simple_cnn.py:long"  # batch 128, as the small studies of this network


def macs(config, overrides=None):
  return inspect.summarize(models.abstract(
      studyplan.load_config(config, overrides or {}).model)).macs


def test_flops_are_macs_times_three_times_images_and_the_total_sums():
  s = Study("p", (("w=1", {"model.width": 1.0}), ("w=0.5", {"model.width": 0.5})),
            config=SIMPLE, seeds=(0, 1),
            base={"train.epochs": 2.0, "data.train_split": "train[:25%]"})
  rows, text = studyplan.plan(s, images_per_sec=1000.0)
  runs, total = rows[:-1], rows[-1]
  assert len(runs) == 4 and total["name"] == "total"
  full, half = macs(SIMPLE), macs(SIMPLE, {"model.width": 0.5})
  assert full > 4_000_000 and half < full / 2  # the small CNN: 4.15M MACs at width 1
  # 25% of 60,000 = 15,000 examples, 1,500 of them held out for validation: 13,500 trained on;
  # 13,500 // 128 = 105 updates an epoch, 2 epochs.
  images = 2 * (13500 // 128) * 128
  for row, m in zip(runs, (full, full, half, half)):
    assert row["train_examples"] == 13500 and row["steps"] == 210 and row["images"] == images
    assert row["macs"] == m and row["flops"] == 3 * m * images
    assert row["wall_s"] == pytest.approx(images / 1000.0)
  assert total["flops"] == sum(r["flops"] for r in runs)
  assert total["wall_s"] == pytest.approx(4 * images / 1000.0)
  assert total["device_hours"] == pytest.approx(4 * images / 1000.0 / 3600)
  assert total["with_startup_s"] == pytest.approx(total["wall_s"] + 4 * studyplan.STARTUP_S)
  assert f"{total['flops']:.3e}" in text and "w=0.5__seed1" in text


def test_steps_and_per_variant_throughput(tmp_path):
  s = Study("p", (("fast", {"model.width": 0.25}), ("slow", {"model.width": 1.0})),
            config=SIMPLE, seeds=(0,), base={"train.steps": 600, "train.batch_size": 64})
  table = tmp_path / "bench.json"
  table.write_text(json.dumps({"fast": 400.0}))
  rows, text = studyplan.plan(s, images_per_sec=str(table), devices=2)
  fast, slow, total = rows
  assert fast["images"] == slow["images"] == 600 * 64
  assert fast["flops"] == 3 * macs(SIMPLE, {"model.width": 0.25}) * 600 * 64
  assert fast["device_hours"] == pytest.approx(2 * 600 * 64 / 400 / 3600)
  assert slow["wall_s"] is None and total["untimed"] == 1
  assert total["wall_s"] == pytest.approx(fast["wall_s"])
  assert "1 runs have no images/s" in text


def test_split_sizes():
  assert studyplan.split_examples("train", 60000) == 60000
  assert studyplan.split_examples("train[:25%]", 60000) == 15000
  assert studyplan.split_examples("train[10%:20%]", 50000) == 5000
  assert studyplan.split_examples("train[1000:]", 60000) == 59000
  assert studyplan.split_examples("train[:-1000]", 60000) == 59000
  with pytest.raises(UserError, match="cannot count"):
    studyplan.split_examples("train+test", 60000)


def test_an_unknown_dataset_takes_the_study_hint():
  s = Study("p", (("a", {"data.name": "folder", "data.train_split": "train[:50%]"}),),
            config=SIMPLE, seeds=(0,), base={"train.steps": 10}, train_examples=1000)
  (row, _), _ = studyplan.plan(s)
  assert row["train_examples"] == 450  # 500, of them 10% held out
  bare = Study("p", s.arms, config=SIMPLE, seeds=(0,), base={"train.epochs": 1.0})
  with pytest.raises(UserError, match="train_examples"):
    studyplan.plan(bare)


def test_every_study_file_has_a_plan():
  rows, _ = studyplan.plan("experiments/width_data.py:small", images_per_sec=500.0)
  s = study_module.load("experiments/width_data.py:small")
  assert len(rows) == len(s.arms) * len(s.seeds) + 1
  widest = [r for r in rows[:-1] if r["variant"] == "width=1.0,train=100pct"]
  model = studyplan.load_config(SIMPLE, {"model.width": 1.0}).model
  assert widest[0]["train_examples"] == 54000
  assert widest[0]["params"] == inspect.summarize(models.abstract(model)).params
  assert widest[0]["images"] == 2 * (54000 // 128) * 128


def test_a_flop_budget_decides_the_images_and_tuning_runs_are_priced():
  """budget_flops compute-matches arms of different cost: images = flops / (3 x MACs) in whole
  batches, so the narrow arm trains on ~4x the images; an arm's own train.flops wins; each
  tuning run (arm x grid point) is a row before the study's own."""
  budget = 3e12
  s = Study("f", (("w=1", {"model.width": 1.0}), ("w=0.5", {"model.width": 0.5}),
                  ("own", {"model.width": 1.0, "train.flops": budget / 2})),
            config=SIMPLE, seeds=(0, 1), budget_flops=budget, tune={"optim.lr": (0.01, 0.03)})
  rows, text = studyplan.plan(s, images_per_sec=1000.0)
  runs, total = rows[:-1], rows[-1]
  assert len(runs) == 3 * 2 + 3 * 2 and total["tuning_runs"] == 6
  assert [r["name"] for r in runs[:2]] == ["tune/w=1__lr=0.01", "tune/w=1__lr=0.03"]
  assert all(r["tuning"] for r in runs[:6]) and not any(r["tuning"] for r in runs[6:])
  full, half = macs(SIMPLE), macs(SIMPLE, {"model.width": 0.5})
  for row in runs:
    m, flops = {"w=1": (full, budget), "w=0.5": (half, budget),
                "own": (full, budget / 2)}[row["variant"]]
    assert row["macs"] == m and row["budget_flops"] == flops
    assert row["steps"] == round(flops / (3 * m * 128)) and row["images"] == row["steps"] * 128
    assert abs(row["flops"] - flops) <= 3 * m * 128 / 2  # within half a batch of the budget
  by = {r["variant"]: r for r in runs}
  assert by["w=0.5"]["images"] > 3 * by["w=1"]["images"]
  assert "6 of the 12 runs are tuning runs" in text
