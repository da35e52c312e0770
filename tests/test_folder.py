"""Image-folder datasets (data.name='folder'): classes from sorted sub-folders, decoding of
every format, the stratified validation split, a test folder as the test split, slicing and
process shares, and one-line errors."""

import os

import numpy as np
import pytest
from PIL import Image

from cnn_jax import data
from cnn_jax.data import folder
from cnn_jax.errors import ConfigError, UserError
from helpers import epoch, stack

FOLDER = {"cat": (10, ".png", "RGB"), "dog": (7, ".jpg", "RGB"), "emu": (5, ".bmp", "L"),
          "fox": (2, ".gif", "P")}


def make_folder(root):
  """Solid images, value 10 x (file index) + 5, of varied sizes; one format per class."""
  index = 0
  for name, (count, ext, mode) in FOLDER.items():
    os.makedirs(root / name)
    for i in range(count):
      size = (20 + 3 * i, 24 + (index % 3))
      value = 10 * index + 5
      image = Image.new("L", size, value).convert(mode)
      image.save(root / name / f"{i:02d}{ext}")
      index += 1
  (root / "notes.txt").write_text("not a class")
  (root / "cat" / "readme.txt").write_text("not an image")


def folder_cfg(root, **pre):
  cfg = data.defaults()
  cfg.name, cfg.folder, cfg.validation_fraction = "folder", str(root), 0.25
  cfg.preprocess.update({"resize": 16, **pre})
  return cfg


def values(batches):
  mask = stack(batches, "mask").astype(bool) if "mask" in batches[0] else None
  images = stack(batches)
  images = images if mask is None else images[mask]
  return [10 * int(round((v * 255 - 5) / 10)) + 5 for v in images[:, 8, 8, 0]]  # JPEG: +-1


def test_folder_dataset_classes_split_and_decoding(tmp_path):
  make_folder(tmp_path)
  ds = data.build(folder_cfg(tmp_path), (16, 16, 3), 2, 4, seed=0)
  assert ds.num_classes == 4 and (ds.num_train, ds.num_eval) == (18, 6)  # round(0.25 x 24)
  evals = list(ds.eval_batches())
  assert all(b["image"].shape == (4, 16, 16, 3) for b in evals)
  labels = stack(evals, "label")[stack(evals, "mask").astype(bool)]
  # quotas 2.5, 1.75, 1.25, 0.5 -> 2, 1, 1, 0; the two largest remainders (0.75, then the
  # first 0.5) get one more
  assert np.bincount(labels, minlength=4).tolist() == [3, 2, 1, 0]
  train = epoch(ds)
  held_in, held_out = values(train), values(evals)
  assert not set(held_in) & set(held_out)
  assert sorted(held_in + held_out) == [10 * i + 5 for i in range(24)]
  assert all(b["image"].shape == (2, 16, 16, 3) for b in train)
  # labels follow sorted class names: file index -> class
  bounds = np.cumsum([c for c, _, _ in FOLDER.values()])
  for v, label in zip(held_in, stack(train, "label")):
    assert label == np.searchsorted(bounds, (v - 5) // 10, side="right")
  # the same seed gives the same split; grey models get one channel
  grey = data.build(folder_cfg(tmp_path), (16, 16, 1), 2, 4, seed=0)
  assert sorted(values(list(grey.eval_batches()))) == sorted(held_out)
  assert next(grey.train_batches(0))["image"].shape == (2, 16, 16, 1)
  # the run seed does not move the split, data.split_seed does; no test_folder: no test split
  cfg = folder_cfg(tmp_path)
  same = data.build(cfg, (16, 16, 3), 2, 4, seed=1)
  assert sorted(values(list(same.eval_batches()))) == sorted(held_out) and not same.has_test
  cfg.split_seed = 1
  other = data.build(cfg, (16, 16, 3), 2, 4, seed=0)
  assert sorted(values(list(other.eval_batches()))) != sorted(held_out)
  assert other.held_out[0] == 6 and other.held_out[1] != same.held_out[1]


def test_folder_test_folder_is_its_test_split(tmp_path):
  make_folder(tmp_path / "train")
  make_folder(tmp_path / "test")
  cfg = folder_cfg(tmp_path / "train")
  cfg.test_folder = str(tmp_path / "test")
  ds = data.build(cfg, (16, 16, 3), 2, 4)
  assert ds.has_test and (ds.num_train, ds.num_eval, ds.num_test) == (18, 6, 24)
  tested = list(ds.eval_batches("test"))
  assert sorted(values(tested)) == [10 * i + 5 for i in range(24)]
  (tmp_path / "test" / sorted(FOLDER)[0]).rename(tmp_path / "test" / "other")
  with pytest.raises(UserError, match="data.test_folder=.*same class sub-folders"):
    data.build(cfg, (16, 16, 3), 2, 4)


def test_folder_split_slicing_and_shards(tmp_path):
  make_folder(tmp_path)
  cfg = folder_cfg(tmp_path)
  cfg.train_split, cfg.eval_split = "train[:50%]", "validation"
  parts = [data.build(cfg, (16, 16, 3), 2, 2, process_index=i, process_count=2)
           for i in range(2)]
  assert parts[0].num_train == 9 and parts[0].num_eval == 6
  shares = [values(epoch(p)) for p in parts]  # 5 + 4 examples, 4 of each in 4 steps
  assert all(len(s) == 4 for s in shares) and not set(shares[0]) & set(shares[1])
  assert sorted(values(list(parts[0].eval_batches())) + values(list(parts[1].eval_batches()))) \
      == sorted(values(list(data.build(folder_cfg(tmp_path), (16, 16, 3), 2, 2).eval_batches())))


def test_held_out_counts_are_stratified():
  assert folder.held_out_counts([10, 7, 5, 2], 0.25).tolist() == [3, 2, 1, 0]
  assert folder.held_out_counts([10, 7, 5, 3], 0.25).tolist() == [2, 2, 1, 1]
  assert folder.held_out_counts([100, 100], 0.1).tolist() == [10, 10]
  assert folder.held_out_counts([3, 3], 0.0).tolist() == [0, 0]


def test_folder_errors(tmp_path):
  with pytest.raises(UserError, match="data.folder.*not a directory"):
    data.build(folder_cfg(tmp_path / "missing"), (16, 16, 3), 2, 2)
  with pytest.raises(UserError, match="data.folder.*no images"):
    data.build(folder_cfg(tmp_path), (16, 16, 3), 2, 2)  # empty
  (tmp_path / "cat").mkdir()
  (tmp_path / "cat" / "a.txt").write_text("x")
  with pytest.raises(UserError, match="data.folder.*no images"):
    data.build(folder_cfg(tmp_path), (16, 16, 3), 2, 2)
  make_folder(tmp_path / "ok")
  cfg = folder_cfg(tmp_path / "ok")
  cfg.eval_split = "val"
  with pytest.raises(ConfigError, match="data.eval_split"):
    data.build(cfg, (16, 16, 3), 2, 2)
