"""Image folders: `data.folder` holds one sub-folder per class (as Keras's
flow_from_directory), classes numbered in sorted name order, images found recursively.

The held-out split is stratified and fixed by the run's seed: round(validation_fraction x N)
images, spread over the classes in proportion to their sizes (largest remainder), each class's
chosen by a permutation seeded by (seed, class index). The splits are named 'train' (held in)
and 'test' (held out; 'validation' is the same), and take TFDS slicing: 'train[:10%]'.
Training files are put in a seeded random order, so shares and statistics samples mix the
classes; each process reads an even contiguous part, as tfds.split_for_jax_process.
Every image is decoded once at the start; unreadable ones stop the run or are left out
(`data.bad_images`), before the split, so every process agrees on it.
"""

from __future__ import annotations

import os
import types

import numpy as np
import tensorflow as tf
from absl import logging
import tensorflow_datasets as tfds

from cnn_jax.data import preprocess
from cnn_jax.data.preprocess import plain
from cnn_jax.data.source import Source
from cnn_jax.errors import ConfigError, UserError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
HELD_OUT = ("test", "validation")


def list_classes(root: str):
  """(class names, [sorted image paths of each class])."""
  if not os.path.isdir(root):
    raise UserError(f"data.folder={root!r} is not a directory; point it at a root with one "
                    "sub-folder per class")
  classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  files = []
  for name in classes:
    found = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, name)):
      dirnames.sort()
      found += [os.path.join(dirpath, f) for f in sorted(filenames)
                if f.lower().endswith(EXTENSIONS)]
    files.append(found)
  if not any(files):
    raise UserError(f"data.folder={root!r} has no images in class sub-folders; put "
                    f"{'/'.join(EXTENSIONS)} files in <root>/<class>/")
  return classes, files


def readable(root: str, files, bad_images: str):
  """`files` (per class) without the images TensorFlow cannot decode, and (h, w, path) of the
  readable image with the shortest side: all of them are read once, in parallel. With
  bad_images='error' an unreadable one stops the run, by name."""
  paths = [p for found in files for p in found]
  decode = lambda i, p: (i, tf.shape(tf.io.decode_image(  # noqa: E731
      tf.io.read_file(p), channels=0, expand_animations=False)))
  ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64),
                                           tf.constant(paths, tf.string)))
  ds = ds.map(plain(decode), num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  ds = ds.ignore_errors()
  sizes = {int(i): (int(shape[0]), int(shape[1])) for i, shape in ds.as_numpy_iterator()}
  bad = [p for i, p in enumerate(paths) if i not in sizes]
  h, w, i = min((*hw, i) for i, hw in sizes.items()) if sizes else (0, 0, 0)
  smallest = (h, w, paths[i]) if sizes else None
  if not bad:
    return files, smallest
  if bad_images == "error":
    raise UserError(f"data.folder={root!r}: {len(bad)} of {len(paths)} images cannot be read, e.g. "
                    f"{bad[0]}; remove or fix them, or set data.bad_images=skip to leave them out")
  logging.warning("data.folder=%r: left out %d of %d images that cannot be read (e.g. %s)",
                  root, len(bad), len(paths), bad[0])
  bad = set(bad)
  kept = [[p for p in found if p not in bad] for found in files]
  if not any(kept):
    raise UserError(f"data.folder={root!r}: none of its {len(paths)} images can be read; "
                    "check the files")
  return kept, smallest


def held_out_counts(sizes, fraction: float):
  """Per-class held-out counts summing to round(fraction x N), by largest remainder."""
  sizes = np.asarray(sizes, np.int64)
  quota = fraction * sizes
  counts = np.floor(quota).astype(np.int64)
  extra = int(np.floor(fraction * sizes.sum() + 0.5)) - counts.sum()
  order = np.argsort(-(quota - counts), kind="stable")  # ties: lower class index first
  counts[order[:extra]] += 1
  return counts


def split(files, fraction: float, seed: int):
  """(train, held_out): lists of (path, label)."""
  counts = held_out_counts([len(f) for f in files], fraction)
  train, held = [], []
  for label, (paths, k) in enumerate(zip(files, counts)):
    perm = np.random.default_rng([seed % 2**32, label]).permutation(len(paths))
    held += [(paths[i], label) for i in sorted(perm[:k])]
    train += [(paths[i], label) for i in sorted(perm[k:])]
  order = np.random.default_rng(seed % 2**32).permutation(len(train))
  return [train[i] for i in order], held


def _slice(spec: str, key: str, splits: dict):
  """The examples of a TFDS split string over `splits` ({name: list})."""
  infos = {k: types.SimpleNamespace(num_examples=len(v), shard_lengths=[len(v)])
           for k, v in splits.items()}
  try:
    parts = tfds.core.ReadInstruction.from_spec(spec).to_absolute(infos)
  except (ValueError, AssertionError) as e:
    raise ConfigError(f"data.{key}={spec!r} is not a split of a folder dataset "
                      f"({' '.join(str(e).split())[:120]}); use 'train' or 'test', with "
                      "optional slicing like 'train[:10%]'") from None
  return [x for p in parts for x in splits[p.splitname][p.from_:p.to]]


def _share(items, index: int, count: int):
  return np.array_split(np.arange(len(items)), count)[index]


def _dataset(items, channels: int):
  paths = tf.constant([p for p, _ in items] or [""], tf.string)[:len(items)]
  labels = tf.constant([lab for _, lab in items] or [0], tf.int32)[:len(items)]

  def decode(path, label):
    image = tf.io.decode_image(tf.io.read_file(path), channels=0, dtype=tf.uint8,
                               expand_animations=False)
    image.set_shape([None, None, None])
    return preprocess.to_channels(image, channels), label

  ds = tf.data.Dataset.from_tensor_slices((paths, labels))
  return ds.map(plain(decode), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def load(cfg, channels: int, seed: int, process_index: int, process_count: int) -> Source:
  classes, files = list_classes(cfg.folder)
  files, smallest = readable(cfg.folder, files, cfg.bad_images)
  train, held = split(files, cfg.validation_fraction, seed)
  splits = {"train": train, **{name: held for name in HELD_OUT}}
  train = _slice(cfg.train_split, "train_split", splits)
  evals = _slice(cfg.eval_split, "eval_split", splits)
  mine = [train[i] for i in _share(train, process_index, process_count)]
  first = [train[i] for i in _share(train, 0, process_count)]
  mine_eval = [evals[i] for i in _share(evals, process_index, process_count)]
  return Source(train=_dataset(mine, channels), eval=_dataset(mine_eval, channels),
                stats=_dataset(first, channels), num_classes=len(classes),
                num_train=len(train), num_eval=len(evals), local_train=len(mine),
                local_eval=len(mine_eval), image_shape=(None, None, channels),
                smallest=smallest)
