"""Image folders: `data.folder` holds one sub-folder per class (as Keras's
flow_from_directory), classes numbered in sorted name order, images found recursively.

The validation split is held out, stratified, and fixed by `data.split_seed` (not the run's
seed: every run of a study holds out the same images): round(validation_fraction x N) images,
spread over the classes in proportion to their sizes (largest remainder), each class's chosen
by a permutation seeded by (split_seed, class index). The splits are named 'train' (held in),
'validation' (held out) and, when `data.test_folder` names a second root with the same class
sub-folders, 'test' (all of its images; without one, a folder has no test split and the
run reports validation only); they take TFDS slicing: 'train[:10%]'. Training files
are put in a seeded random order, so shares and statistics samples mix the classes; each
process reads an even contiguous part, as tfds.split_for_jax_process.
Every image is decoded once at the start; unreadable ones stop the run or are left out
(`data.bad_images`), before the split, so every process agrees on it.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from absl import logging

from cnn_jax.data import preprocess, splits
from cnn_jax.data.preprocess import plain
from cnn_jax.data.source import Source
from cnn_jax.errors import UserError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


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


def _slice(spec: str, key: str, named: dict):
  """The examples of a TFDS split string over `named` ({name: list})."""
  parts = splits.select(spec, key, {k: len(v) for k, v in named.items()}, "a folder dataset")
  return [x for name, a, b in parts for x in named[name][a:b]]


def _share(items, index: int, count: int):
  lo, hi = splits.share_range(len(items), index, count)
  return items[lo:hi]


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


def _test_files(cfg, classes):
  """The images of data.test_folder, which must hold the same class sub-folders."""
  names, files = list_classes(cfg.test_folder)
  if names != classes:
    raise UserError(f"data.test_folder={cfg.test_folder!r} has the classes {', '.join(names)}, "
                    f"data.folder {', '.join(classes)}; give both the same class sub-folders")
  files, _ = readable(cfg.test_folder, files, cfg.bad_images)
  return [(p, label) for label, found in enumerate(files) for p in found]


def load(cfg, channels: int, process_index: int, process_count: int) -> Source:
  classes, files = list_classes(cfg.folder)
  files, smallest = readable(cfg.folder, files, cfg.bad_images)
  train, held = split(files, cfg.validation_fraction, cfg.split_seed)
  named = {"train": train}
  if held:
    named["validation"] = held
  if cfg.test_folder:
    named["test"] = _test_files(cfg, classes)
  train, evals = _slice(cfg.train_split, "train_split", named), _slice(cfg.eval_split,
                                                                      "eval_split", named)
  # a folder has a test split only where data.test_folder names one
  tested = bool(cfg.test_split) and (bool(cfg.test_folder) or cfg.test_split != "test")
  test = _slice(cfg.test_split, "test_split", named) if tested else []
  mine = _share(train, process_index, process_count)
  mine_eval, mine_test = (_share(x, process_index, process_count) for x in (evals, test))
  root = os.path.abspath(cfg.folder)
  return Source(train=_dataset(mine, channels), eval=_dataset(mine_eval, channels),
                stats=_dataset(_share(train, 0, process_count), channels),
                test=_dataset(mine_test, channels) if tested else None,
                num_classes=len(classes), num_train=len(train), num_eval=len(evals),
                num_test=len(test), local_train=len(mine), local_eval=len(mine_eval),
                local_test=len(mine_test), image_shape=(None, None, channels),
                smallest=smallest,
                held_out=(len(held), splits.fingerprint(os.path.relpath(p, root)
                                                        for p, _ in held)) if held else None)
