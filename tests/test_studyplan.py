"""A study's plan: every run's training FLOPs (3 x MACs x images trained, MACs from the model
itself), its predicted time from a throughput, and the total; the split sizes it counts."""

import json

import pytest

from cnn_jax import inspect, models, studyplan
from cnn_jax.errors import UserError
from cnn_jax.study import Study

SIMPLE = "configs/simple_cnn.py"


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
  # 25% of 60,000 = 15,000 examples; 15,000 // 128 = 117 updates an epoch, 2 epochs.
  images = 2 * (15000 // 128) * 128
  for row, m in zip(runs, (full, full, half, half)):
    assert row["train_examples"] == 15000 and row["steps"] == 234 and row["images"] == images
    assert row["macs"] == m and row["flops"] == 3 * m * images
    assert row["wall_s"] == pytest.approx(images / 1000.0)
  assert total["flops"] == sum(r["flops"] for r in runs)
  assert total["wall_s"] == pytest.approx(4 * images / 1000.0)
  assert total["device_hours"] == pytest.approx(4 * images / 1000.0 / 3600)
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
  assert row["train_examples"] == 500
  bare = Study("p", s.arms, config=SIMPLE, seeds=(0,), base={"train.epochs": 1.0})
  with pytest.raises(UserError, match="train_examples"):
    studyplan.plan(bare)


def test_every_study_file_has_a_plan():
  rows, _ = studyplan.plan("experiments/width_data.py:small", images_per_sec=500.0)
  assert len(rows) == 4 * 4 * 3 + 1
  widest = [r for r in rows[:-1] if r["variant"] == "width=1.0,train=100pct"]
  model = studyplan.load_config(SIMPLE, {"model.width": 1.0}).model
  assert widest[0]["train_examples"] == 60000
  assert widest[0]["params"] == inspect.summarize(models.abstract(model)).params
  assert widest[0]["images"] == 2 * (60000 // 128) * 128
