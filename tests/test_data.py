"""The input pipeline: determinism and resume, process sharding, splits, each preprocessing
step, and one-line errors (image folders: test_folder.py; CIFAR-10 and ImageNet on TFDS's
mock data: test_mock_datasets.py).

Real data: Fashion-MNIST, prepared once offline from the vendored files (session fixture);
the other real-data tests read small slices of it.
"""

import hashlib
import os

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from cnn_jax import data
from cnn_jax.data import preprocess, splits
from cnn_jax.errors import ConfigError, UserError
from helpers import built_once, copy_of, epoch, stack


def default_cfg(data_dir):
  """The default data config on `data_dir` through tf.data (this file tests the tf.data path;
  test_arrays.py the array path), data.manual_dir unset: the vendored original files."""
  cfg = data.defaults()
  cfg.data_dir, cfg.input = data_dir, "tf.data"
  cfg.cache, cfg.shuffle_buffer = False, 256  # the first batch without decoding all 60000
  return cfg


@pytest.fixture(scope="session")
def fm_prepared(tmp_path_factory):
  """(data_dir, dataset): a fresh data_dir, which `build` prepares offline from the vendored
  files, once for the session (both workers); then the default config on it."""
  d = built_once(tmp_path_factory, "tfds_fashion_mnist",
                 lambda d: data.build(default_cfg(d), (28, 28, 1), 128, 256))
  return d, data.build(default_cfg(d), (28, 28, 1), global_batch=128, eval_batch=256)


@pytest.fixture
def fm_dir(fm_prepared):
  return fm_prepared[0]


def fm(fm_dir, train="train[:40]", evals="test[:11]", **pre):
  cfg = data.defaults()
  cfg.data_dir, cfg.input = fm_dir, "tf.data"
  cfg.train_split, cfg.eval_split = train, evals
  cfg.preprocess.update(pre)
  return cfg


def digests(images):
  return [hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest() for x in images]


# ---- config ----------------------------------------------------------------------------------

def test_defaults_suit_fashion_mnist():
  cfg = data.defaults()
  assert cfg.name == "fashion_mnist" and cfg.train_split == "train"
  assert (cfg.eval_split, cfg.test_split, cfg.validation_fraction) == ("validation", "test", 0.1)
  p = cfg.preprocess
  assert p.rescale and not (p.pad or p.resize or p.scale_jitter or p.random_crop or p.flip
                            or p.pca_colour)
  assert (p.mean, p.std, p.stats_samples) == ("none", "none", 10000)
  assert isinstance(p.scale_jitter, tuple)
  data.validate(cfg, (28, 28, 1))
  assert os.path.isabs(data.VENDORED_FASHION_MNIST)
  assert sorted(os.listdir(data.VENDORED_FASHION_MNIST)) == [
      "LICENSE", "README.md", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
      "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


@pytest.mark.parametrize("key,value,shape,match", [
    ("preprocess.flip", 1, (28, 28, 1), "data.preprocess.flip"),
    ("preprocess.mean", "rgb", (28, 28, 1), "data.preprocess.mean"),
    ("preprocess.std", "pixel", (28, 28, 1), "data.preprocess.std"),
    ("preprocess.pad", -1, (28, 28, 1), "data.preprocess.pad"),
    ("preprocess.resize", 100, (224, 224, 3), "data.preprocess.resize"),
    ("preprocess.scale_jitter", [256, 512], (224, 224, 3), "data.preprocess.scale_jitter"),
    ("preprocess.scale_jitter", (512, 256), (224, 224, 3), "data.preprocess.scale_jitter"),
    ("preprocess.scale_jitter", (128, 512), (224, 224, 3), "data.preprocess.scale_jitter"),
    ("preprocess.pca_colour", 0.1, (28, 28, 1), "data.preprocess.pca_colour"),
    ("preprocess.pca_colour", -0.1, (32, 32, 3), "data.preprocess.pca_colour"),
    ("preprocess.crop_padding", 4, (32, 32, 3), "data.preprocess.crop_padding"),
    ("preprocess.stats_samples", 0, (28, 28, 1), "data.preprocess.stats_samples"),
    ("preprocess.colour", 1, (28, 28, 1), "data.preprocess.colour"),
    ("validation_fraction", 1.0, (28, 28, 1), "data.validation_fraction"),
    ("shuffle_buffer", -5, (28, 28, 1), "data.shuffle_buffer"),
    ("cache", "yes", (28, 28, 1), "data.cache"),
    ("name", "", (28, 28, 1), "data.name"),
    ("name", "folder", (28, 28, 1), "data.folder"),
    ("train_split", "", (28, 28, 1), "data.train_split"),
    ("shufle_buffer", 1, (28, 28, 1), "data.shufle_buffer"),
    ("name", "cifar10", (32, 32, 2), "model.input_shape"),
])
def test_validate_names_the_bad_key(key, value, shape, match):
  d = data.defaults().to_dict()
  group = d["preprocess"] if key.startswith("preprocess.") else d
  group[key.split(".")[-1]] = value
  with pytest.raises(ConfigError, match=match) as e:
    data.validate(ml_collections.ConfigDict(d), shape)
  assert "\n" not in str(e.value)


def test_resize_and_scale_jitter_exclusive():
  cfg = data.defaults()
  cfg.preprocess.resize, cfg.preprocess.scale_jitter = 256, (256, 512)
  with pytest.raises(ConfigError, match="scale_jitter"):
    data.validate(cfg, (224, 224, 3))


# ---- real Fashion-MNIST, prepared offline ----------------------------------------------------

def test_fashion_mnist_prepares_offline_from_vendored_files(fm_prepared):
  d, ds = fm_prepared
  assert tfds.builder("fashion_mnist", data_dir=d).is_prepared()
  assert (ds.num_train, ds.num_eval, ds.num_test, ds.num_classes) == (54000, 6000, 10000, 10)
  assert ds.steps_per_epoch == 421 and ds.held_out[0] == 6000
  first = next(ds.train_batches(0))
  assert first["image"].shape == (128, 28, 28, 1) and first["image"].dtype == np.float32
  assert first["label"].shape == (128,) and first["label"].dtype == np.int32
  assert 0.0 <= first["image"].min() and first["image"].max() <= 1.0


def test_split_slicing_changes_num_train(fm_dir):
  ds = data.build(fm(fm_dir, "train[:10%]", "test[:25%]"), (28, 28, 1), 100, 100)
  assert (ds.num_train, ds.num_eval, ds.steps_per_epoch) == (5400, 2500, 54)  # of 54,000
  ds = data.build(fm(fm_dir, "train[:40]+train[-8:]"), (28, 28, 1), 8, 8)
  assert ds.num_train == 48


def test_determinism_and_resume(fm_dir):
  cfg = fm(fm_dir, "train[:64]", pad=2, random_crop=True, crop_padding=2, flip=True)
  ds = data.build(cfg, (32, 32, 1), global_batch=8, eval_batch=8, seed=3)
  assert ds.steps_per_epoch == 8
  full = epoch(ds, 1)
  assert len(full) == 8
  again = epoch(data.build(cfg, (32, 32, 1), global_batch=8, eval_batch=8, seed=3), 1)
  for a, b in zip(full, again):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  tail = epoch(ds, 1, start=5)
  assert len(tail) == 3
  for a, b in zip(full[5:], tail):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  assert epoch(ds, 1, start=8) == []
  other = epoch(ds, 2)
  assert not np.array_equal(stack(full, "label"), stack(other, "label"))
  reseeded = epoch(data.build(cfg, (32, 32, 1), 8, 8, seed=4), 1)
  assert not np.array_equal(stack(full), stack(reseeded))
  # an epoch is a permutation of the split (64 examples, no remainder)
  plain = data.build(fm(fm_dir, "train[:64]"), (28, 28, 1), 8, 8, seed=3)
  assert sorted(digests(stack(epoch(plain, 0)))) == sorted(digests(stack(epoch(plain, 1))))


def test_processes_read_disjoint_shares_that_cover_the_split(fm_dir):
  cfg = fm(fm_dir, "train[:40]", "test[:11]")
  whole = data.build(cfg, (28, 28, 1), global_batch=4, eval_batch=4)
  parts = [data.build(cfg, (28, 28, 1), global_batch=4, eval_batch=4, process_index=i,
                      process_count=2) for i in range(2)]
  assert all(p.num_train == 40 and p.num_eval == 11 and p.steps_per_epoch == 10 for p in parts)
  shares = [digests(stack(epoch(p))) for p in parts]
  assert all(len(s) == 20 for s in shares)
  assert not set(shares[0]) & set(shares[1])
  assert sorted(shares[0] + shares[1]) == sorted(digests(stack(epoch(whole))))
  # eval: 6 + 5 examples, both processes give 3 batches of 2, padding masked and zero
  evals = [list(p.eval_batches()) for p in parts]
  assert [len(e) for e in evals] == [3, 3]
  assert all(b["image"].shape == (2, 28, 28, 1) for e in evals for b in e)
  assert [stack(e, "mask").sum() for e in evals] == [6, 5]
  real = []
  for e in evals:
    mask = stack(e, "mask").astype(bool)
    images = stack(e)
    assert not images[~mask].any() and not stack(e, "label")[~mask].any()
    real += digests(images[mask])
  single = list(whole.eval_batches())
  mask = stack(single, "mask").astype(bool)
  assert sorted(real) == sorted(digests(stack(single)[mask]))


def test_eval_batches_cover_every_example_once_with_mask(fm_dir):
  ds = data.build(fm(fm_dir, evals="test[:10]"), (28, 28, 1), 8, eval_batch=4)
  batches = list(ds.eval_batches())
  assert ds.eval_steps == len(batches) == 3
  assert [b["mask"].tolist() for b in batches][-1] == [1, 1, 0, 0]
  assert stack(batches, "mask").sum() == 10
  ref = tfds.load("fashion_mnist", split="test[:10]", data_dir=fm_dir)
  ref_labels = [int(x["label"]) for x in ref]
  assert stack(batches, "label")[:10].tolist() == ref_labels  # eval order is the split's
  assert not batches[-1]["image"][2:].any()


def test_pad_adds_a_zero_border(fm_dir):
  plain = list(data.build(fm(fm_dir), (28, 28, 1), 8, 11).eval_batches())[0]["image"]
  padded = list(data.build(fm(fm_dir, pad=2), (32, 32, 1), 8, 11).eval_batches())[0]["image"]
  assert padded.shape == (11, 32, 32, 1)
  np.testing.assert_array_equal(padded[:, 2:-2, 2:-2], plain)
  border = np.ones((32, 32), bool)
  border[2:-2, 2:-2] = False
  assert not padded[:, border].any() and plain.any()


def test_image_smaller_than_model_is_refused(fm_dir):
  with pytest.raises(ConfigError, match="data.preprocess.pad"):
    data.build(fm(fm_dir), (32, 32, 1), 8, 8)


def test_flip_mirrors_some_images(fm_dir):
  plain = stack(epoch(data.build(fm(fm_dir), (28, 28, 1), 8, 8)))
  flipped = stack(epoch(data.build(fm(fm_dir, flip=True), (28, 28, 1), 8, 8)))
  same = [np.array_equal(a, b) for a, b in zip(plain, flipped)]
  mirrored = [np.array_equal(a[:, ::-1], b) for a, b in zip(plain, flipped)]
  assert all(s or m for s, m in zip(same, mirrored))
  assert 5 < sum(mirrored) < 35 and sum(same) > 5


def test_random_crop_picks_a_window_of_the_padded_image(fm_dir):
  plain = stack(epoch(data.build(fm(fm_dir), (28, 28, 1), 8, 8)))
  cropped = epoch(data.build(fm(fm_dir, random_crop=True, crop_padding=4), (28, 28, 1), 8, 8))
  cropped = stack(cropped)
  offsets = set()
  for a, b in zip(plain, cropped):
    padded = np.pad(a, [(4, 4), (4, 4), (0, 0)])
    hits = [(y, x) for y in range(9) for x in range(9)
            if np.array_equal(padded[y:y + 28, x:x + 28], b)]
    assert hits, "a crop is not a window of the padded image"
    offsets.add(hits[0])
  assert len(offsets) > 10
  # at eval, a central crop of the unpadded image: unchanged
  ev = list(data.build(fm(fm_dir, random_crop=True, crop_padding=4), (28, 28, 1), 8, 11)
            .eval_batches())[0]["image"]
  np.testing.assert_array_equal(
      ev, list(data.build(fm(fm_dir), (28, 28, 1), 8, 11).eval_batches())[0]["image"])


@pytest.mark.parametrize("mean", ["channel", "pixel"])
def test_mean_and_std_normalise_the_training_set(fm_dir, mean):
  cfg = fm(fm_dir, "train[:300]", "train[:300]", mean=mean, std="channel", stats_samples=300)
  ds = data.build(cfg, (28, 28, 1), 100, 100)
  assert ds.mean_mode == mean and int(ds.stats["samples"]) == 300
  assert ds.stats["mean"].shape == ds.stats["std"].shape == (1,)
  assert 0.2 < ds.stats["mean"][0] < 0.4  # Fashion-MNIST's is 0.286
  batches = list(ds.eval_batches())
  x = stack(batches).astype(np.float64)
  assert stack(batches, "mask").all()
  assert abs(x.mean()) < 1e-4
  if mean == "pixel":
    assert ds.stats["mean_image"].shape == (28, 28, 1)
    assert np.abs(x.mean(0)).max() < 1e-4
  assert abs(np.sqrt((x ** 2).mean()) - 1.0) < 1e-3


def test_split_without_a_full_batch_is_refused(fm_dir):
  with pytest.raises(UserError, match="data.train_split"):
    data.build(fm(fm_dir, "train[:10]"), (28, 28, 1), 16, 16)
  with pytest.raises(UserError, match="global_batch"):
    data.build(fm(fm_dir), (28, 28, 1), 9, 8, process_index=0, process_count=2)


def test_unknown_split_is_refused(fm_dir):
  with pytest.raises(ConfigError, match="data.eval_split"):
    data.build(fm(fm_dir, evals="val"), (28, 28, 1), 8, 8)
  cfg = fm(fm_dir, evals="validation")
  cfg.validation_fraction = 0.0
  with pytest.raises(ConfigError, match="data.eval_split='validation'.*validation_fraction > 0"):
    data.build(cfg, (28, 28, 1), 8, 8)


# ---- preprocessing ops -----------------------------------------------------------------------

def test_scale_jitter_draws_the_shorter_side_per_image():
  p = data.defaults().preprocess
  p.scale_jitter, p.random_crop = (40, 48), True
  prep = preprocess.Preprocessor(p, (32, 32, 3), {}, "none")
  image = tf.zeros([1, 30, 50, 3], tf.uint8)
  assert prep.precrop(image).shape[1:3] == (44, 73)  # Q = (40 + 48) // 2 at eval
  key = tf.constant(preprocess.stream_key(0, 0))
  sides = set()
  for position in range(40):
    x = prep.precrop(image, preprocess.draws(key, 0, position, 1))
    h, w = x.shape[1:3]
    assert 40 <= h <= 48 and w == round(50 * h / 30)
    sides.add(h)
    assert prep(image, preprocess.draws(key, 0, position, 1)).shape == (1, 32, 32, 3)
  assert len(sides) >= 6


def test_draws_depend_on_position_not_on_batching():
  key = tf.constant(preprocess.stream_key(7, 1))
  batch = preprocess.draws(key, 3, 10, 6).numpy()
  singles = np.concatenate([preprocess.draws(key, 3, 10 + i, 1).numpy() for i in range(6)])
  np.testing.assert_array_equal(batch, singles)
  assert not np.array_equal(batch, preprocess.draws(key, 4, 10, 6).numpy())
  other = tf.constant(preprocess.stream_key(7, 0))
  assert not np.array_equal(batch, preprocess.draws(other, 3, 10, 6).numpy())
  assert 0.0 <= batch.min() and batch.max() < 1.0


# ---- TFDS errors -----------------------------------------------------------------------------

def test_unknown_dataset_name():
  cfg = data.defaults()
  cfg.name = "no_such_dataset_xyz"
  with pytest.raises(ConfigError, match="data.name='no_such_dataset_xyz'") as e:
    data.build(cfg, (28, 28, 1), 8, 8)
  assert "\n" not in str(e.value)


def test_unprepared_dataset_without_manual_dir(tmp_path):
  cfg = data.defaults()
  cfg.name, cfg.data_dir = "imagenet2012", str(tmp_path)  # manual download only
  with pytest.raises(UserError, match="data.manual_dir") as e:
    data.build(cfg, (224, 224, 3), 8, 8)
  message = str(e.value)
  assert "imagenet2012" in message and str(tmp_path) in message and "\n" not in message
  assert e.value.__cause__ is not None


def test_wrong_manual_files_are_refused_by_checksum(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  for f in os.listdir(data.VENDORED_FASHION_MNIST):
    if f.endswith(".gz"):
      (manual / f).write_bytes(b"not the original file")
  cfg = data.defaults()
  cfg.data_dir, cfg.manual_dir = str(tmp_path / "tfds"), str(manual)
  with pytest.raises(UserError, match="fashion_mnist.*data.manual_dir") as e:
    data.build(cfg, (28, 28, 1), 8, 8)
  assert "Checksum" in str(e.value) and e.value.__cause__ is not None


SHARED_MNIST = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "shared", "datasets", "mnist")


@pytest.mark.skipif(not os.path.isdir(SHARED_MNIST), reason="no ../shared/datasets/mnist here")
def test_mnist_beside_fashion_mnist_gets_its_own_files(fm_prepared, tmp_path):
  """Both datasets' original files share names (train-images-idx3-ubyte.gz, ...); TFDS names
  extracted manual files by name alone, so a shared download folder would feed MNIST's builder
  Fashion-MNIST's images. Pixel means: MNIST 0.1307, Fashion-MNIST 0.2860."""
  cfg = data.defaults()
  beside = copy_of(fm_prepared[0], tmp_path / "tfds")  # Fashion-MNIST's downloads as well
  cfg.name, cfg.data_dir, cfg.manual_dir = "mnist", beside, SHARED_MNIST
  cfg.cache, cfg.shuffle_buffer = False, 256
  ds = data.build(cfg, (28, 28, 1), global_batch=500, eval_batch=500)
  images = np.concatenate([b["image"] for _, b in zip(range(4), ds.train_batches(0))])
  assert abs(float(images.mean()) - 0.1307) < 0.01


# ---- the validation split held out of 'train' ------------------------------------------------

def test_validation_is_held_out_of_train_by_the_split_seed_alone(fm_dir):
  raw = tfds.as_numpy(tfds.builder("fashion_mnist", data_dir=fm_dir).as_dataset(
      split="train", batch_size=-1, shuffle_files=False))["image"]
  held = splits.holdout(len(raw), 0.1, seed=0)
  kept = np.setdiff1d(np.arange(len(raw)), held)
  cfg = fm(fm_dir, "train", "validation")
  cfg.preprocess.rescale = False
  cfg.cache = False  # read once: no warm-up passes over the 54,000 (caching is tested apart)
  ds = data.build(cfg, (28, 28, 1), 500, 500, seed=3)
  assert (ds.num_train, ds.num_eval) == (54000, 6000) and len(set(held) & set(kept)) == 0
  val = np.concatenate([b["image"][b["mask"] > 0] for b in ds.eval_batches()])
  np.testing.assert_array_equal(val, raw[held].astype(np.float32))
  # the training examples are the rest: one epoch's shuffled images are a permutation of them
  train = stack(epoch(ds))
  assert len(train) == len(kept)  # 108 full batches of 500
  assert sorted(digests(train.astype(np.uint8))) == sorted(digests(raw[kept]))
  # another run seed holds out the same images; another split seed others
  assert data.build(cfg, (28, 28, 1), 500, 500, seed=5).held_out == ds.held_out
  cfg.split_seed = 1
  other = data.build(cfg, (28, 28, 1), 500, 500, seed=3).held_out
  assert other[0] == 6000 and other[1] != ds.held_out[1]


def test_process_shares_of_the_held_out_splits_partition_them(fm_dir):
  cfg = fm(fm_dir, "train[:10%]", "validation[:300]")
  cfg.preprocess.rescale = False
  whole = data.build(cfg, (28, 28, 1), 60, 60)
  parts = [data.build(cfg, (28, 28, 1), 60, 60, process_index=i, process_count=3)
           for i in range(3)]
  assert all((p.num_train, p.num_eval) == (5400, 300) for p in parts)
  val = lambda d: np.concatenate([b["image"][b["mask"] > 0] for b in d.eval_batches()])
  np.testing.assert_array_equal(np.concatenate([val(p) for p in parts]), val(whole))
  train = [set(digests(stack(epoch(p)).astype(np.uint8))) for p in parts]
  assert not (train[0] & train[1] or train[1] & train[2])
  # the slice is of the held-in part: nested fractions, one validation set
  assert data.build(fm(fm_dir, "train[:5%]", "validation"), (28, 28, 1), 60, 60).held_out \
      == data.build(fm(fm_dir, "train", "validation"), (28, 28, 1), 60, 60).held_out
