"""TFDS datasets: prepare offline from `data.manual_dir` when needed, read this process's share.

Each process reads only its share of a split (`tfds.split_for_jax_process`: contiguous, even
parts; the first `n % process_count` processes hold one example more). Files are read in
order (shuffle_files=False), so a share's order is fixed; shuffling happens per epoch later.
"""

from __future__ import annotations

import contextlib
import os
import socket

import tensorflow as tf
import tensorflow_datasets as tfds

from cnn_jax.data import VENDORED_FASHION_MNIST, preprocess
from cnn_jax.data.preprocess import plain
from cnn_jax.data.source import Source
from cnn_jax.errors import ConfigError, UserError

VENDORED = {"fashion_mnist": VENDORED_FASHION_MNIST}  # used when manual_dir is unset


def _online(host="storage.googleapis.com", port=443, timeout=3.0) -> bool:
  try:
    socket.create_connection((host, port), timeout=timeout).close()
    return True
  except OSError:
    return False


@contextlib.contextmanager
def _fail_fast_offline():
  """Offline, TFDS's downloader retries each file 10 times with backoff (minutes); fail at
  once instead."""
  from tensorflow_datasets.core.download import downloader
  retries = getattr(downloader, "MAX_RETRIES", None)
  if retries is not None and not _online():
    downloader.MAX_RETRIES = 0
  try:
    yield
  finally:
    if retries is not None:
      downloader.MAX_RETRIES = retries


def _builder(cfg):
  try:
    return tfds.builder(cfg.name, data_dir=cfg.data_dir or None)
  except tfds.core.registered.DatasetNotFoundError:
    raise ConfigError(f"data.name={cfg.name!r} is not a TFDS dataset; use a name from "
                      "tfds.list_builders(), e.g. 'fashion_mnist' or 'cifar10', or "
                      "'folder'") from None


def _prepare(builder, cfg):
  """Prepares the dataset if needed: from `manual_dir` (Fashion-MNIST: the vendored copy when
  unset), verified against TFDS's registered checksums; else by download."""
  if builder.is_prepared():
    return
  manual = cfg.manual_dir or VENDORED.get(cfg.name, "")
  if cfg.manual_dir:
    _check_manual_files(builder, cfg)
  config = tfds.download.DownloadConfig(manual_dir=manual or None)
  root = cfg.data_dir or tfds.core.constants.DATA_DIR
  # A download folder per dataset: TFDS names the extraction of a manual file after its file
  # name alone, so MNIST's train-images-idx3-ubyte.gz would otherwise reuse Fashion-MNIST's.
  downloads = os.path.join(os.path.expanduser(root), "downloads", builder.name)
  try:
    with _fail_fast_offline():
      builder.download_and_prepare(download_dir=downloads, download_config=config)
  except Exception as e:  # any failure to fetch, verify or generate
    reason = " ".join(f"{type(e).__name__}: {e}".split())[:160]
    raise UserError(f"data.name={cfg.name!r} is not prepared in data.data_dir={root!r} and "
                    f"could not be prepared ({reason}); set data.manual_dir to a folder of "
                    "its original files") from e


def _check_manual_files(builder, cfg) -> None:
  """Names the original files `data.manual_dir` lacks (those TFDS registers a checksum for)."""
  if not os.path.isdir(cfg.manual_dir):
    raise UserError(f"data.manual_dir={cfg.manual_dir!r} is not a directory; point it at a "
                    f"folder of {cfg.name}'s original files")
  try:
    expected = sorted({os.path.basename(url) for url in (builder.url_infos or {})})
  except Exception:  # noqa: BLE001 - no registered files: nothing to check
    expected = []
  present = set(os.listdir(cfg.manual_dir))
  missing = [f for f in expected if f not in present]
  if missing:
    raise UserError(f"data.manual_dir={cfg.manual_dir!r} lacks {cfg.name}'s original files "
                    f"{', '.join(missing)}; put them there or fix the path")


def _keys(builder, cfg):
  keys = builder.info.supervised_keys
  image, label = keys if isinstance(keys, tuple) and len(keys) == 2 else ("image", "label")
  features = builder.info.features
  if (image not in features or label not in features
      or not isinstance(features[image], tfds.features.Image)
      or not isinstance(features[label], tfds.features.ClassLabel)):
    raise ConfigError(f"data.name={cfg.name!r} has no image and class-label features; use an "
                      "image-classification dataset")
  return image, label


def _read(builder, split, cfg, key, image_key, label_key, channels):
  """The examples of `split` (cfg[key], or a process's share of it)."""
  try:
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            read_config=tfds.ReadConfig(try_autocache=False))
  except (ValueError, KeyError, AssertionError) as e:
    reason = " ".join(str(e).split())[:120]
    raise ConfigError(f"data.{key}={cfg[key]!r} is not a split of {cfg.name} ({reason}); "
                      "use e.g. 'train', 'test' or 'train[:10%]'") from None

  def select(ex):
    return preprocess.to_channels(ex[image_key], channels), tf.cast(ex[label_key], tf.int32)

  # cheap: fused into TFDS's own parallel decode (a parallel map is slower)
  return ds.map(plain(select))


def _count(builder, ds, split) -> int:
  n = int(ds.cardinality())
  return n if n >= 0 else builder.info.splits[split].num_examples


def load(cfg, channels: int, process_index: int, process_count: int) -> Source:
  builder = _builder(cfg)
  image_key, label_key = _keys(builder, cfg)
  _prepare(builder, cfg)

  def read(key, split, index):
    shard = tfds.split_for_jax_process(split, process_index=index, process_count=process_count)
    ds = _read(builder, shard, cfg, key, image_key, label_key, channels)
    return ds, _count(builder, ds, shard)

  train, local_train = read("train_split", cfg.train_split, process_index)
  evals, local_eval = read("eval_split", cfg.eval_split, process_index)
  stats = train if process_index == 0 else read("train_split", cfg.train_split, 0)[0]
  whole = {}
  for key in ("train_split", "eval_split"):
    ds = _read(builder, cfg[key], cfg, key, image_key, label_key, channels)
    whole[key] = _count(builder, ds, cfg[key])
  h, w = builder.info.features[image_key].shape[:2]
  return Source(train=train, eval=evals, stats=stats,
                num_classes=builder.info.features[label_key].num_classes,
                num_train=whole["train_split"], num_eval=whole["eval_split"],
                local_train=local_train, local_eval=local_eval, image_shape=(h, w, channels))
