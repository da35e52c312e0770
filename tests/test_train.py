"""The whole training loop on tiny data: every family, resume, evaluation, config errors."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from cnn_jax import config, metrics, train
from cnn_jax.errors import UserError
from helpers import load_config


@pytest.fixture
def mock_fashion_mnist():
  with tfds.testing.mock_data(num_examples=48):
    yield


def tiny(cfg, steps=4, batch=16):
  cfg.train.batch_size = batch
  cfg.train.eval_batch_size = 16
  cfg.train.steps = steps
  cfg.train.eval_every_steps = 2
  cfg.train.log_every_steps = 1
  cfg.data.manual_dir = ""
  return config.validate(cfg)


def records(workdir):
  return metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))


FAMILIES = [("simple_cnn.py", "base", {}), ("lenet5.py", "paper", {}),
            ("alexnet.py", "small", {}), ("vgg.py", "small_A", {"width": 0.125})]


@pytest.mark.parametrize("file,arg,model", FAMILIES)
def test_every_family_trains_end_to_end(mock_fashion_mnist, tmp_path, file, arg, model):
  cfg = load_config(file, arg)
  cfg.data.name = "fashion_mnist"
  cfg.model.update(model)
  cfg = tiny(cfg)
  final = train.train(cfg, str(tmp_path))
  rows = records(tmp_path)
  steps = [r for r in rows if "loss" in r]
  assert [r["step"] for r in steps] == [1, 2, 3, 4]
  for r in steps:
    assert {"step", "epoch", "loss", "lr", "images_per_sec", "top1", "top5"} <= set(r)
    assert np.isfinite(r["loss"])
  evals = [r for r in rows if "eval_top1" in r and not r.get("final")]
  assert [r["step"] for r in evals] == [2, 4]
  assert {"eval_top1", "eval_top5", "eval_loss"} <= set(evals[-1])
  assert rows[-1]["final"] and rows[-1]["step"] == 4
  assert rows[-1]["eval_top1"] == final["eval_top1"] == evals[-1]["eval_top1"]
  for name in ("config.json", "curves.png", "tensorboard"):
    assert os.path.exists(tmp_path / name)
  assert sorted(int(s) for s in os.listdir(tmp_path / "checkpoints")) == [2, 4]


def test_resume_continues_from_the_saved_step_and_matches(mock_fashion_mnist, tmp_path):
  def cfg(steps):  # a constant rate, so that the 4-step run is a prefix of the 6-step one
    c = load_config("simple_cnn.py", "base")
    c.optim.schedule = "constant"
    return tiny(c, steps=steps)

  straight = train.train(cfg(6), str(tmp_path / "straight"))
  train.train(cfg(4), str(tmp_path / "resumed"))
  resumed = train.train(cfg(6), str(tmp_path / "resumed"))
  a, b = records(tmp_path / "straight"), records(tmp_path / "resumed")
  assert [r["step"] for r in b if "loss" in r] == [1, 2, 3, 4, 5, 6]
  assert sum(1 for r in b if r.get("final")) == 1
  losses = lambda rows: [r["loss"] for r in rows if "loss" in r]  # noqa: E731
  assert losses(a) == losses(b)
  assert resumed["eval_top1"] == straight["eval_top1"]
  assert resumed["eval_loss"] == straight["eval_loss"]
  # A finished run started again reports its result and trains no further.
  again = train.train(cfg(6), str(tmp_path / "resumed"))
  assert again["step"] == 6 and len(records(tmp_path / "resumed")) == len(b)
  # Killed after its last checkpoint but before the final record: evaluated and recorded.
  path = tmp_path / "resumed" / "metrics.jsonl"
  path.write_text("".join(line + "\n" for line in path.read_text().splitlines()
                          if '"final"' not in line))
  recovered = train.train(cfg(6), str(tmp_path / "resumed"))
  assert recovered["eval_top1"] == straight["eval_top1"]
  assert records(tmp_path / "resumed")[-1]["final"]


def test_eval_command_restores_latest_and_best(mock_fashion_mnist, tmp_path):
  cfg = tiny(load_config("simple_cnn.py", "base"))
  final = train.train(cfg, str(tmp_path))
  latest = train.evaluate(cfg, str(tmp_path), "latest")
  assert latest["step"] == 4 and latest["eval_top1"] == final["eval_top1"]
  assert json.load(open(tmp_path / "eval_4.json"))["eval_loss"] == latest["eval_loss"]
  best = train.evaluate(cfg, str(tmp_path), "best")
  assert best["step"] in (2, 4)
  with pytest.raises(UserError, match="no checkpoint"):
    train.evaluate(cfg, str(tmp_path / "empty"), "latest")


def write_images(root, n_per_class=48, seed=0):
  """Two classes a CNN separates easily: dark and bright noise."""
  rng = np.random.default_rng(seed)
  for label, (lo, hi) in enumerate([(0, 90), (160, 255)]):
    os.makedirs(root / f"class{label}", exist_ok=True)
    for i in range(n_per_class):
      pixels = rng.integers(lo, hi, (28, 28), dtype=np.uint8)
      Image.fromarray(pixels, "L").save(root / f"class{label}" / f"{i}.png")


def test_loss_falls_and_accuracy_rises_on_learnable_data(tmp_path):
  write_images(tmp_path / "images")
  cfg = load_config("simple_cnn.py", "base")
  cfg.data.name = "folder"
  cfg.data.folder = str(tmp_path / "images")
  cfg.data.validation_fraction = 0.25
  cfg.model.num_classes = 2
  cfg.optim.label_smoothing = 0.0  # smoothing's loss floor (about 0.2 here) is not the point
  cfg = tiny(cfg, steps=12)
  final = train.train(cfg, str(tmp_path / "run"))
  losses = [r["loss"] for r in records(tmp_path / "run") if "loss" in r]
  assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:2])
  assert final["eval_top1"] >= 0.9


def test_test_split_is_evaluated_once_on_the_best_checkpoint_by_validation(tmp_path):
  write_images(tmp_path / "images")
  write_images(tmp_path / "test", n_per_class=10, seed=1)
  cfg = load_config("simple_cnn.py", "base")
  cfg.data.update(name="folder", folder=str(tmp_path / "images"), validation_fraction=0.25,
                  test_folder=str(tmp_path / "test"))
  cfg.model.num_classes = 2
  cfg.checkpoint.keep = 1  # the best is kept beside the newest
  cfg.optim.lr = 0.003
  cfg = tiny(cfg, steps=8)
  final = train.train(cfg, str(tmp_path / "run"))
  logged = [r for r in records(tmp_path / "run") if "eval_top1" in r and not r.get("final")]
  assert not any("test_top1" in r for r in logged)  # evaluated once, at the end
  assert final["best_eval_top1"] == max(r["eval_top1"] for r in logged)
  assert final["test_split"] == "test"
  saved = {int(d) for d in os.listdir(tmp_path / "run" / "checkpoints") if d.isdigit()}
  best = max(r["eval_top1"] for r in logged if r["step"] in saved)  # the kept best
  assert final["test_step"] == max(r["step"] for r in logged
                                   if r["eval_top1"] == best and r["step"] in saved)
  assert final["validation_examples"] == 24 and len(final["validation_sha256"]) == 64
  run = train.Run(cfg, str(tmp_path / "run"), mode="eval")
  try:
    tested = run.evaluate("test", run.restore_state(final["test_step"]))
  finally:
    run.close()
  assert tested == {k: final[k] for k in ("test_loss", "test_top1", "test_top5")}
  assert final["test_top1"] >= 0.9


def test_flops_budget_sets_the_length(mock_fashion_mnist, tmp_path):
  cfg = tiny(load_config("simple_cnn.py", "base"), steps=0)
  run = train.Run(cfg, str(tmp_path / "a"))
  macs = run.summary.macs
  run.close()
  cfg.train.flops = 3.0 * macs * 16 * 5  # five steps of 16 images
  run = train.Run(cfg, str(tmp_path / "b"))
  try:
    assert run.total_steps == 5
  finally:
    run.close()


def test_training_config_errors(mock_fashion_mnist, tmp_path):
  cfg = tiny(load_config("simple_cnn.py", "base"))
  cfg.model.num_classes = 5
  with pytest.raises(UserError, match="model.num_classes=5"):
    train.train(cfg, str(tmp_path / "a"))
  cfg = tiny(load_config("simple_cnn.py", "base"))
  (tmp_path / "file").write_text("x")
  with pytest.raises(UserError, match="not writable"):
    train.train(cfg, str(tmp_path / "file" / "run"))
  cfg = tiny(load_config("simple_cnn.py", "base"), batch=64)
  with pytest.raises(UserError, match="fewer than one global batch of 64"):
    train.train(cfg, str(tmp_path / "b"))
  with pytest.raises(UserError, match="train.eval_every_epochs"):
    bad = load_config("simple_cnn.py", "base")
    bad.train.eval_every_epochs = 0.0
    config.validate(bad)


def test_gradient_accumulation_matches_the_full_batch(mock_fashion_mnist, tmp_path):
  def run(micro, name):
    cfg = load_config("simple_cnn.py", "base")
    cfg.optim.accumulate_steps = micro
    cfg.optim.name, cfg.optim.momentum = "sgd", 0.0
    train.train(tiny(cfg, steps=2), str(tmp_path / name))
    return [r["loss"] for r in records(tmp_path / name) if "loss" in r]

  full, accumulated = run(1, "full"), run(2, "accumulated")  # 16 = 2 x 8 devices
  np.testing.assert_allclose(full, accumulated, rtol=1e-4)


@pytest.mark.parametrize("file,arg,variant", [
    ("simple_cnn.py", None, "base"), ("lenet5.py", "modern", "modern"),
    ("alexnet.py", "one_tower", "one_tower"), ("alexnet.py", "small_one_tower", "one_tower"),
    ("vgg.py", "A-LRN", "A-LRN"), ("vgg.py", "small_E", "E")])
def test_config_files_and_variants(file, arg, variant):
  cfg = config.validate(load_config(file, arg))
  assert cfg.model.name == file[:-3] and cfg.model.variant == variant
  small = arg is not None and arg.startswith("small")
  assert (cfg.data.name == "fashion_mnist") == (small or file == "simple_cnn.py")


def test_data_seed_separates_the_data_order_from_the_initialisation(tmp_path):
  import numpy as np
  import tensorflow_datasets as tfds

  from cnn_jax import data, train
  from helpers import tiny_training
  assert data.seed(load_config("simple_cnn.py").data, 7) == 7  # -1: the run's seed
  with tfds.testing.mock_data(num_examples=48):
    runs = {}
    for name, seed, data_seed in (("a", 0, -1), ("b", 0, 5), ("c", 3, 0)):
      cfg = tiny_training("simple_cnn.py", steps=2, data=1)
      cfg.seed, cfg.data.seed = seed, data_seed
      run = train.Run(cfg, str(tmp_path / name))
      first = next(iter(run.ds.train_batches(0)))["label"]
      import jax
      kernel = next(x for x in jax.tree.leaves(run.state.params) if x.ndim > 1)
      runs[name] = (np.asarray(first), np.asarray(kernel))
      run.close()
  assert not np.array_equal(runs["a"][0], runs["b"][0])  # another data order ...
  np.testing.assert_array_equal(runs["a"][1], runs["b"][1])  # ... the same initialisation
  np.testing.assert_array_equal(runs["a"][0], runs["c"][0])  # the same data order ...
  assert not np.array_equal(runs["a"][1], runs["c"][1])  # ... another initialisation


def test_the_best_checkpoint_is_the_best_metric_kept_not_the_latest(tmp_path):
  from cnn_jax import checkpoint
  c = checkpoint.defaults()
  c.keep, c.async_save = 2, False
  ckpt = checkpoint.Checkpoints(str(tmp_path / "a"), c)
  state = {"w": np.zeros(2, np.float32)}
  for step, top1 in ((1, 0.5), (2, 0.9), (3, 0.7), (4, 0.6), (5, 0.65)):
    ckpt.save(step, state, {"eval_top1": top1})
  ckpt.wait()
  assert ckpt.latest_step() == 5 and 2 in ckpt.all_steps() and ckpt.best_step() == 2
  ckpt.close()
  again = checkpoint.Checkpoints(str(tmp_path / "a"), c)  # a resumed run reads the metrics
  again.save(6, state, {"eval_top1": 0.55})
  again.wait()
  assert again.best_step() == 2 and 2 in again.all_steps()
  again.close()
  c.best_metric = "eval_loss"  # lower is better
  ckpt = checkpoint.Checkpoints(str(tmp_path / "b"), c)
  for step, loss in ((1, 0.9), (2, 0.3), (3, 0.5), (4, 0.3)):
    ckpt.save(step, state, {"eval_loss": loss})
  ckpt.wait()
  assert ckpt.best_step() == 4  # the latest of the ties
  ckpt.close()
