"""The array input path: a small dataset held in memory as NumPy arrays and batched in NumPy,
without TensorFlow (`data.input='arrays'`, or `'auto'` where `unsupported` finds nothing).

The same splits as the tf.data path (pipeline.py): the held-out validation indices of
splits.holdout with data.split_seed, each process's even share, the test split; the same
statistics and the same preprocessing numbers (np_preprocess.py). The arrays come from the
decoded cache beside TFDS's files (arrays.py), read in TFDS's order.

Epoch e of process i is its share permuted by NumPy's generator seeded from (seed, e, i) (not
tf.data's shuffle: the order differs from the tf.data path's); example k of that order is
augmented with the draws at position k, so `train_batches(e, start_step=s)` is exactly the
tail of `train_batches(e)`. Eval batches keep the split's order, the last padded with zeros
and masked.
"""

from __future__ import annotations

import sys

import numpy as np

from cnn_jax.data import arrays, np_preprocess, splits
from cnn_jax.data.config import check_batches, validate
from cnn_jax.errors import ConfigError, UserError


def unsupported(cfg) -> str:
  """What in the `data` group `cfg` the array path does not take ('' if nothing)."""
  p = cfg.preprocess
  if cfg.name not in arrays.VERSIONS:
    return f"data.name={cfg.name!r} (it reads {', '.join(sorted(arrays.VERSIONS))})"
  for key, on in (("resize", p.resize), ("scale_jitter", p.scale_jitter),
                  ("pca_colour", p.pca_colour)):
    if on:
      return f"data.preprocess.{key}={on!r}"
  if cfg.shuffle_buffer:
    return f"data.shuffle_buffer={cfg.shuffle_buffer} (it shuffles the whole split)"
  if not cfg.cache:
    return "data.cache=False (it holds the dataset in memory)"
  return ""


def _tfds_mocked() -> bool:
  """TFDS's mock data is active (tfds.testing.mock_data): what TFDS reads is not on disk."""
  tfds = sys.modules.get("tensorflow_datasets")
  try:
    fn = tfds.core.DatasetBuilder.as_dataset
  except AttributeError:
    return False
  return "mocking" in getattr(fn, "__module__", "")


def applies(cfg) -> bool:
  """Whether `data.build` takes the array path for `cfg`."""
  if cfg.input == "auto":
    return not unsupported(cfg) and not _tfds_mocked()
  return cfg.input == "arrays"


class ArrayDataset:
  """Batches of one process, as pipeline.Dataset's (same attributes and methods)."""

  batched = True

  def __init__(self, shares, totals, prep, *, num_classes, global_batch, eval_batch, seed,
               process_index, process_count, held_out, source_shape):
    self.num_train, self.num_eval, self.num_test = totals
    self.has_test = "test" in shares
    self.held_out = held_out
    self.num_classes = num_classes
    self.steps_per_epoch = self.num_train // global_batch
    self.local_batch = global_batch // process_count
    self.eval_local_batch = eval_batch // process_count
    self.eval_steps, self.test_steps = (
        splits.eval_steps(len(shares[s][1]) if s in shares else 0, total, process_count,
                          self.eval_local_batch)
        for s, total in (("eval", self.num_eval), ("test", self.num_test)))
    self.stats = prep.stats
    self.mean_mode = prep.mean_mode
    self.image_shape = (prep.h, prep.w, prep.c)
    self._shares = shares
    self._prep = prep
    self._seed = seed
    self._process_index = process_index
    self._key = np_preprocess.stream_key(seed, process_index)
    self._source_shape = source_shape

  def train_batches(self, epoch: int, start_step: int = 0):
    """Batches `start_step`, ..., steps_per_epoch - 1 of epoch `epoch`: dicts of image float32
    (local_batch, H, W, C) and label int32 (local_batch,)."""
    if not 0 <= start_step <= self.steps_per_epoch:
      raise ValueError(f"start_step={start_step} is outside [0, {self.steps_per_epoch}]")
    return self._train(epoch, start_step)

  def _train(self, epoch, start_step):
    images, labels = self._shares["train"]
    rng = np.random.default_rng(np_preprocess.shuffle_seed(self._seed, epoch,
                                                           self._process_index))
    order = rng.permutation(len(labels))
    lb = self.local_batch
    augment = bool(self._prep.p.random_crop or self._prep.p.flip)
    for step in range(start_step, self.steps_per_epoch):
      ix = order[step * lb:(step + 1) * lb]
      u = np_preprocess.draws(self._key, epoch, step * lb, lb) if augment else None
      yield {"image": self._prep(images[ix], u), "label": labels[ix]}

  def eval_batches(self, split: str = "eval", views=None):
    """All of this process's share of the eval (or 'test') split in `eval_steps` (or
    `test_steps`) batches of eval_batch // process_count, the last zero-padded: dicts of
    image, label and mask float32 (1 real, 0 padding). With `views` (protocols.Views, whose
    TensorFlow ops take NumPy arrays), each batch is mapped by it instead."""
    if split not in self._shares or split == "train":
      raise ValueError(f"no {split} split in this pipeline")
    return self._eval(split, views)

  def _eval(self, split, views):
    images, labels = self._shares[split]
    lb = self.eval_local_batch
    steps = self.eval_steps if split == "eval" else self.test_steps
    for k in range(steps):
      x, y = images[k * lb:(k + 1) * lb], labels[k * lb:(k + 1) * lb]
      real = len(y)
      if real < lb:  # blank images, preprocessed, then zeroed
        x = np.concatenate([x, np.zeros((lb - real, *images.shape[1:]), np.uint8)])
        y = np.concatenate([y, np.zeros(lb - real, np.int32)])
      out = ({"image": self._prep(x)} if views is None else
             {name: np.asarray(v, np.float32) for name, v in views(x).items()})
      mask = (np.arange(lb) < real).astype(np.float32)
      if real < lb:
        out = {name: np.where(mask.reshape(-1, *[1] * (v.ndim - 1)) > 0, v, 0).astype(
            np.float32) for name, v in out.items()}
      yield {**out, "label": y, "mask": mask}

  @property
  def preprocessor(self):
    """The eval preprocessing (np_preprocess.Preprocessor), with its training-set statistics."""
    return self._prep

  @property
  def source_shape(self):
    """(h, w, C) of the decoded images."""
    return self._source_shape


def build(cfg, image_shape, global_batch: int, eval_batch: int, seed: int = 0,
          process_index: int = 0, process_count: int = 1) -> ArrayDataset:
  """The array pipeline of `cfg` (the `data` group, already validated) for a model taking
  `image_shape` (H, W, C); see `unsupported` for what it takes."""
  image_shape = tuple(int(d) for d in image_shape)
  validate(cfg, image_shape)
  check_batches(global_batch, eval_batch, process_index, process_count)
  h, w, c = image_shape
  why = unsupported(cfg)
  if why:
    raise ConfigError(f"data.input='arrays' does not take {why}; use data.input='auto' or "
                      "'tf.data'")
  data = arrays.load(cfg)
  stored = {name: (np_preprocess.to_channels(x, c), y) for name, (x, y) in data.splits.items()}
  named = splits.Named({name: len(y) for name, (_, y) in stored.items()}, cfg)

  def share(key, index):
    parts, total = named.part(cfg[key], key, cfg.name, index, process_count)
    if not parts:
      x, y = stored[next(iter(stored))]
      return (x[:0], y[:0]), total
    x = np.concatenate([stored[s][0][ix] for s, ix in parts])
    y = np.concatenate([stored[s][1][ix] for s, ix in parts]).astype(np.int32)
    return (x, y), total

  shares, totals = {}, []
  for name, key in (("train", "train_split"), ("eval", "eval_split"), ("test", "test_split")):
    if name == "test" and not cfg.test_split:
      totals.append(0)
      continue
    shares[name], total = share(key, process_index)
    totals.append(total)
  if totals[0] < global_batch:
    raise UserError(f"data.train_split={cfg.train_split!r} has {totals[0]} examples, fewer "
                    f"than one global batch of {global_batch}; use a larger split or a smaller "
                    "batch")
  p = cfg.preprocess
  source_shape = stored[next(iter(stored))][0].shape[1:]
  pre_h, pre_w = source_shape[0] + 2 * p.pad, source_shape[1] + 2 * p.pad
  if pre_h < h or pre_w < w:
    raise ConfigError(f"data.preprocess.pad={p.pad}, resize={p.resize}: {cfg.name} images are "
                      f"{pre_h}x{pre_w}, smaller than the model's {h}x{w}; pad or resize them "
                      "to at least that")
  prep = np_preprocess.Preprocessor(p, (h, w, c), {}, p.mean)
  if p.mean != "none" or p.std != "none":
    first = shares["train"][0] if process_index == 0 else share("train_split", 0)[0][0]
    prep.stats = np_preprocess.statistics(first[:p.stats_samples], prep,
                                          pixel=p.mean == "pixel")
  return ArrayDataset(shares, tuple(totals), prep, num_classes=data.num_classes,
                      global_batch=global_batch, eval_batch=eval_batch, seed=seed,
                      process_index=process_index, process_count=process_count,
                      held_out=named.fingerprint(), source_shape=tuple(source_shape))
