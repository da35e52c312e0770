"""The array input path (data.input='arrays'): the decoded cache (built once, rebuilt when
stale or corrupt), the same splits, statistics and preprocessing numbers as the tf.data path,
determinism and resume, process shares, and no TensorFlow at start-up.

Real data: Fashion-MNIST prepared offline from the vendored files into a fresh data_dir.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from cnn_jax import data
from cnn_jax.data import arrays, np_preprocess, preprocess, splits
from cnn_jax.errors import ConfigError
from helpers import built_once, copy_of, stack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cfg_for(data_dir, path="arrays", train="train", evals="validation", **pre):
  cfg = data.defaults()
  cfg.data_dir, cfg.input, cfg.manual_dir = data_dir, path, data.VENDORED_FASHION_MNIST
  cfg.train_split, cfg.eval_split = train, evals
  cfg.preprocess.update(pre)
  return cfg


def prepare(d):
  """Fashion-MNIST prepared and its decoded cache built by the array path, on a fresh
  data_dir."""
  got = arrays.load(cfg_for(d))
  assert got.rebuilt == "the dataset is not prepared yet"
  assert got.path == os.path.join(d, "fashion_mnist", "3.0.1", arrays.FOLDER)


@pytest.fixture(scope="module")
def fm_dir(tmp_path_factory):
  """A data_dir where the array path prepared Fashion-MNIST and built its decoded cache, once
  for the session (both workers); tests read it, or change a copy."""
  return built_once(tmp_path_factory, "tfds_arrays", prepare)


def test_versions_are_tfds_defaults():
  for name, version in arrays.VERSIONS.items():
    assert str(tfds.builder_cls(name).VERSION) == version, name


@pytest.mark.parametrize("spec", [
    "train", "test", "train+test", "train[:10%]", "train[10%:]", "train[-8:]", "train[:40]",
    "train[40:-8]", "train[33%:66%]", "train[:-5%]+test[40:60]", "validation[:300]",
    "train[:25%]", "train[1_000:2_000]", "train[12.5%:50]", "train[:0]"])
def test_split_strings_are_read_as_tfds_reads_them(spec):
  names = {"train": 54000, "validation": 6000, "test": 10001}
  ours = splits._parse(spec, names)  # pylint: disable=protected-access
  assert ours is not None
  infos = {k: type("Info", (), {"num_examples": n, "shard_lengths": [n]}) for k, n in
           names.items()}
  theirs = [(p.splitname, p.from_ or 0, names[p.splitname] if p.to is None else p.to)
            for p in tfds.core.ReadInstruction.from_spec(spec).to_absolute(infos)]
  assert ours == theirs


@pytest.mark.parametrize("spec", ["val", "train[5]", "all", "train[:100000]", "train[%:]"])
def test_other_split_strings_go_to_tfds(spec):
  names = {"train": 54000, "validation": 6000, "test": 10000}
  assert splits._parse(spec, names) is None  # pylint: disable=protected-access
  with pytest.raises(ConfigError, match="data.eval_split"):
    splits.select(spec, "eval_split", names, "fashion_mnist") if spec != "all" else (
        splits.select("nope", "eval_split", names, "fashion_mnist"))


def test_validation_is_raw_of_the_holdout_and_train_the_rest(fm_dir):
  raw = tfds.as_numpy(tfds.builder("fashion_mnist", data_dir=fm_dir).as_dataset(
      split="train", batch_size=-1, shuffle_files=False))["image"]
  held = splits.holdout(len(raw), 0.1, seed=0)
  cfg = cfg_for(fm_dir, rescale=False)
  ds = data.build(cfg, (28, 28, 1), 500, 500, seed=3)
  assert type(ds).__name__ == "ArrayDataset"
  assert (ds.num_train, ds.num_eval, ds.num_test, ds.num_classes) == (54000, 6000, 10000, 10)
  val = np.concatenate([b["image"][b["mask"] > 0] for b in ds.eval_batches()])
  np.testing.assert_array_equal(val, raw[held].astype(np.float32))
  train = stack(list(ds.train_batches(0))).astype(np.uint8)  # 108 batches of 500: 54,000
  kept = np.setdiff1d(np.arange(len(raw)), held)
  key = lambda x: x.reshape(len(x), -1)
  np.testing.assert_array_equal(np.unique(key(train), axis=0), np.unique(key(raw[kept]), axis=0))
  # the same held-out set as the tf.data path; another run seed the same, a split seed others
  tf_cfg = cfg_for(fm_dir, "tf.data", "train[:1%]", "validation", rescale=False)
  assert data.build(tf_cfg, (28, 28, 1), 500, 500).held_out == ds.held_out
  assert data.build(cfg, (28, 28, 1), 500, 500, seed=5).held_out == ds.held_out
  cfg.split_seed = 1
  other = data.build(cfg, (28, 28, 1), 500, 500, seed=3).held_out
  assert other[0] == 6000 and other[1] != ds.held_out[1]


@pytest.mark.parametrize("pre", [dict(mean="channel", std="channel"),
                                 dict(pad=2, mean="pixel", std="channel")])
def test_eval_batches_and_statistics_equal_the_tf_data_paths(fm_dir, pre):
  shape = (32, 32, 1) if pre.get("pad") else (28, 28, 1)
  a = data.build(cfg_for(fm_dir, "arrays", "train[:20%]", "validation[:700]", **pre), shape,
                 100, 256)
  t = data.build(cfg_for(fm_dir, "tf.data", "train[:20%]", "validation[:700]", **pre), shape,
                 100, 256)
  assert set(a.stats) == set(t.stats)
  for k in a.stats:
    np.testing.assert_allclose(a.stats[k], t.stats[k], rtol=1e-6)
  ea, et = list(a.eval_batches()), list(t.eval_batches())
  assert len(ea) == len(et) == a.eval_steps == 3
  for x, y in zip(ea, et):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_allclose(x[k], y[k], atol=1e-6)
  assert stack(ea, "mask").sum() == 700 and not ea[-1]["image"][188:].any()


def test_augmentation_is_the_tf_preprocessings_numbers():
  p = data.defaults().preprocess
  p.update(pad=2, random_crop=True, crop_padding=3, flip=True, mean="pixel", std="channel")
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)
  st = {"mean": np.float32([0.3]), "std": np.float32([0.35]),
        "mean_image": rng.random((32, 32, 1)).astype(np.float32)}
  key = np_preprocess.stream_key(4, 1)
  u = np_preprocess.draws(key, 2, 48, 16)
  np.testing.assert_array_equal(u, preprocess.draws(tf.constant(key), 2, 48, 16).numpy())
  ours = np_preprocess.Preprocessor(p, (32, 32, 1), st, "pixel")
  theirs = preprocess.Preprocessor(p, (32, 32, 1), st, "pixel")
  np.testing.assert_allclose(ours(images, u), theirs(images, u).numpy(), atol=1e-6)
  np.testing.assert_allclose(ours(images), theirs(images).numpy(), atol=1e-6)
  rgb = rng.integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
  np.testing.assert_array_equal(np_preprocess.to_channels(rgb, 1),
                                np.stack([preprocess.to_channels(x, 1).numpy() for x in rgb]))


def test_determinism_and_resume(fm_dir):
  cfg = cfg_for(fm_dir, "arrays", "train[:64]", pad=2, random_crop=True, crop_padding=2,
                flip=True)
  ds = data.build(cfg, (32, 32, 1), global_batch=8, eval_batch=8, seed=3)
  full = list(ds.train_batches(1))
  assert len(full) == ds.steps_per_epoch == 8
  again = list(data.build(cfg, (32, 32, 1), 8, 8, seed=3).train_batches(1))
  tail = list(ds.train_batches(1, start_step=5))
  for a, b in zip(full, again):
    np.testing.assert_array_equal(a["image"], b["image"])
  assert len(tail) == 3
  for a, b in zip(full[5:], tail):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  assert list(ds.train_batches(1, 8)) == []
  assert not np.array_equal(stack(full, "label"), stack(list(ds.train_batches(2)), "label"))
  assert not np.array_equal(stack(full), stack(list(
      data.build(cfg, (32, 32, 1), 8, 8, seed=4).train_batches(1))))
  plain = data.build(cfg_for(fm_dir, "arrays", "train[:64]"), (28, 28, 1), 8, 8, seed=3)
  e0, e1 = (stack(list(plain.train_batches(e))) for e in (0, 1))
  assert not np.array_equal(e0, e1)
  np.testing.assert_array_equal(np.unique(e0.reshape(64, -1), axis=0),
                                np.unique(e1.reshape(64, -1), axis=0))


def test_processes_read_disjoint_shares(fm_dir):
  cfg = cfg_for(fm_dir, "arrays", "train[:40]", "test[:11]")
  whole = data.build(cfg, (28, 28, 1), 4, 4)
  parts = [data.build(cfg, (28, 28, 1), 4, 4, process_index=i, process_count=2)
           for i in range(2)]
  assert all((p.num_train, p.num_eval, p.steps_per_epoch) == (40, 11, 10) for p in parts)
  rows = [stack(list(p.train_batches(0))).reshape(20, -1) for p in parts]
  mixed = np.unique(np.concatenate(rows), axis=0)
  assert len(mixed) == 40
  np.testing.assert_array_equal(mixed, np.unique(
      stack(list(whole.train_batches(0))).reshape(40, -1), axis=0))
  evals = [list(p.eval_batches()) for p in parts]
  assert [len(e) for e in evals] == [3, 3] and [stack(e, "mask").sum() for e in evals] == [6, 5]
  real = np.concatenate([stack(e)[stack(e, "mask") > 0] for e in evals])
  single = list(whole.eval_batches())
  np.testing.assert_array_equal(real, stack(single)[stack(single, "mask") > 0])
  assert data.build(cfg, (28, 28, 1), 4, 4).stats == {}


def _rebuilt(cfg):
  return arrays.load(cfg).rebuilt


def test_cache_is_rebuilt_when_corrupt_or_stale(fm_dir, tmp_path):
  cfg = cfg_for(copy_of(fm_dir, tmp_path / "tfds"))
  first = arrays.load(cfg)
  assert first.rebuilt == ""  # the fixture built it: read as it is
  folder = first.path
  train = os.path.join(folder, "train.images.npy")
  with open(train, "r+b") as f:  # one flipped byte in the middle of the images
    f.seek(20_000_000)
    b = f.read(1)
    f.seek(20_000_000)
    f.write(bytes([b[0] ^ 0xFF]))
  assert "corrupt" in _rebuilt(cfg)
  again = arrays.load(cfg)
  assert again.rebuilt == ""
  np.testing.assert_array_equal(again.splits["train"][0], first.splits["train"][0])
  os.truncate(os.path.join(folder, "test.labels.npy"), 100)
  assert _rebuilt(cfg)
  with open(os.path.join(folder, arrays.MANIFEST), "w") as f:
    f.write("{")
  assert "unreadable" in _rebuilt(cfg)
  # the source changes: TFDS's files are not those the cache was built from
  info = os.path.join(os.path.dirname(folder), "dataset_info.json")
  with open(info) as f:
    text = json.load(f)
  with open(info, "w") as f:
    json.dump(text, f, indent=1)  # the same dataset, another file
  assert _rebuilt(cfg) == "TFDS's prepared files changed since it was built"
  assert arrays.load(cfg).rebuilt == ""
  np.testing.assert_array_equal(arrays.load(cfg).splits["test"][1], first.splits["test"][1])


def test_start_up_imports_no_tensorflow(fm_dir):
  code = ("import sys; from cnn_jax import data; cfg = data.defaults(); "
          f"cfg.data_dir = {fm_dir!r}; ds = data.build(cfg, (28, 28, 1), 128, 256); "
          "next(ds.train_batches(0)); list(ds.eval_batches('test')); "
          "print(type(ds).__name__, sorted(m for m in ('tensorflow', 'tensorflow_datasets') "
          "if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       check=True).stdout
  assert out.strip() == "ArrayDataset []"


def test_summary_imports_no_tensorflow():
  code = ("import sys, runpy; sys.argv = ['run.py', 'summary']; "
          "import atexit; atexit.register(lambda: print(sorted(m for m in ("
          "'tensorflow', 'tensorflow_datasets', 'orbax') if m in sys.modules)))\n"
          "runpy.run_path('run.py', run_name='__main__')")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "CNN_JAX_HUGE_PAGES": "0"}, check=True).stdout
  assert out.strip().splitlines()[-1] == "[]"


def test_auto_and_unsupported_options(fm_dir):
  cfg = cfg_for(fm_dir, "auto", "train[:64]")
  assert type(data.build(cfg, (28, 28, 1), 8, 8)).__name__ == "ArrayDataset"
  cfg.shuffle_buffer = 16
  assert type(data.build(cfg, (28, 28, 1), 8, 8)).__name__ == "Dataset"
  with tfds.testing.mock_data(num_examples=16):  # TFDS's mock data is not on disk: tf.data
    assert type(data.build(cfg_for(fm_dir, "auto", "train"), (28, 28, 1), 8, 8)
                ).__name__ == "Dataset"
  bad = cfg_for(fm_dir, "arrays", resize=32)
  with pytest.raises(ConfigError, match="data.input='arrays' does not take "
                     "data.preprocess.resize=32") as e:
    data.validate(bad, (28, 28, 1))
  assert "\n" not in str(e.value)
  bad = cfg_for(fm_dir, "arrays")
  bad.name = "imagenet2012"
  with pytest.raises(ConfigError, match="data.name='imagenet2012'"):
    data.validate(bad, (28, 28, 1))


def test_evaluation_protocol_views_take_the_arrays(fm_dir):
  from cnn_jax import evaluation
  got = {}
  for path in ("arrays", "tf.data"):
    ds = data.build(cfg_for(fm_dir, path, "train[:5%]", "test[:70]", mean="channel",
                            std="channel"), (28, 28, 1), 64, 32)
    views = evaluation.Views(ds.preprocessor, (28, 36), ds.source_shape)
    got[path] = list(ds.eval_batches("eval", views))
  for a, b in zip(*got.values()):
    assert a.keys() == b.keys() == {"q28", "q36", "label", "mask"}
    for k in a:
      np.testing.assert_allclose(a[k], b[k], atol=1e-5)
  assert got["arrays"][-1]["q36"].shape == (32, 36, 36, 1)


def test_the_main_job_reaches_its_first_step_without_tensorflow(fm_dir, tmp_path):
  """benchmarks/startup.py's child: run.py's flags, train.Run and one train step."""
  out = subprocess.run(
      [sys.executable, "benchmarks/startup.py", "--child", f"--spawned={time.time()!r}",
       "--config=configs/simple_cnn.py", "--input=auto", f"--workdir={tmp_path / 'run'}",
       f"--override=--config.data.data_dir={fm_dir}"],
      cwd=ROOT, capture_output=True, text=True, check=True).stdout
  marks = json.loads(out.strip().splitlines()[-1])
  assert marks["modules"] == ["orbax"]  # neither tensorflow nor tensorflow_datasets
  assert marks["imports"] <= marks["data"] <= marks["state"] <= marks["first step"]
  assert os.listdir(tmp_path / "run" / "tensorboard")  # the hparams event, written without TF
