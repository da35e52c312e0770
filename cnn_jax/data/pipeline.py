"""The input pipeline: deterministic, resumable epochs of this process's share.

Epoch e of process i is its share, shuffled by a seed drawn from (seed, e, i); example k of
that order is augmented with random draws addressed by (seed, i) and (e, k) alone
(preprocess.draws, a stateless Philox stream), whatever the batching or the starting step.
Resuming at step s skips s x local_batch shuffled examples *before* the augmentation map, so
`train_batches(e, start_step=s)` is bit-identical to the tail of `train_batches(e)`, at the
cost of reading, not augmenting, the skipped examples. With `cache`, the decoded examples are
read once and kept in memory; each epoch only shuffles, skips and maps on top.

Shuffling uses tf.data's seeded shuffle: TF's global seed (tf.random.set_seed) must stay unset,
or be the same on resume, for the orders to repeat.
"""

from __future__ import annotations

import tensorflow as tf
from absl import logging

from cnn_jax.data import folder, preprocess, splits, stats, tfds_source
from cnn_jax.data.np_preprocess import shuffle_seed  # noqa: F401 - also pipeline's
from cnn_jax.data.preprocess import plain
from cnn_jax.data.config import check_batches, validate
from cnn_jax.errors import ConfigError, UserError


def _options(threads: int = 0):
  opts = tf.data.Options()
  opts.deterministic = True
  if threads:  # a private pool: tf.data's maps use at most `threads` cores
    opts.threading.private_threadpool_size = threads
    opts.threading.max_intra_op_parallelism = 1
  return opts


def _hide_gpus():
  """Keeps TensorFlow off the accelerators JAX uses."""
  try:
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):  # already initialised: leave it
    pass




class Dataset:
  """Batches of one process; see `build`. Images of one size (`batched`) are preprocessed a
  batch at a time, others one at a time; the numbers are the same."""

  def __init__(self, source, prep, *, global_batch, eval_batch, seed, process_index,
               process_count, shuffle_buffer, cache, batched, threads=0):
    self.num_train = source.num_train
    self.num_eval = source.num_eval
    self.num_test = source.num_test
    self.has_test = source.test is not None
    self.held_out = source.held_out  # (count, sha256) of the validation split held out
    self.num_classes = source.num_classes
    self.steps_per_epoch = source.num_train // global_batch
    self.local_batch = global_batch // process_count
    self.eval_local_batch = eval_batch // process_count
    self.eval_steps, self.test_steps = (
        splits.eval_steps(local, total, process_count, self.eval_local_batch)
        for local, total in ((source.local_eval, source.num_eval),
                             (source.local_test, source.num_test)))
    self.stats = prep.stats
    self.mean_mode = prep.mean_mode
    self.image_shape = (prep.h, prep.w, prep.c)
    self.batched = batched
    self._source = source
    self._prep = prep
    self._seed = seed
    self._process_index = process_index
    self._key = tf.constant(preprocess.stream_key(seed, process_index))
    self._buffer = shuffle_buffer or max(source.local_train, 1)
    self._train = source.train.cache() if cache else source.train
    self._eval = {"eval": source.eval.cache() if cache else source.eval}
    self._local = {"eval": source.local_eval, "test": source.local_test}
    if self.has_test:  # read once, at the end: not kept
      self._eval["test"] = source.test
    self._warm = {"train": not cache, "eval": not cache, "test": True}
    self._threads = threads

  def _warmed(self, name, ds):
    """Reads a cached share through once, so no partly read epoch leaves the cache unfilled."""
    if not self._warm[name]:
      ds.with_options(_options()).reduce(tf.constant(0, tf.int64),
                                         plain(lambda n, _: n + 1))
      self._warm[name] = True
    return ds

  def train_batches(self, epoch: int, start_step: int = 0):
    """Batches `start_step`, ..., steps_per_epoch - 1 of epoch `epoch`: dicts of image float32
    (local_batch, H, W, C) and label int32 (local_batch,)."""
    if not 0 <= start_step <= self.steps_per_epoch:
      raise ValueError(f"start_step={start_step} is outside [0, {self.steps_per_epoch}]")
    prep, key, lb = self._prep, self._key, self.local_batch
    ds = self._warmed("train", self._train)
    ds = ds.shuffle(self._buffer, seed=shuffle_seed(self._seed, epoch, self._process_index),
                    reshuffle_each_iteration=False)
    ds = ds.skip(start_step * lb).take((self.steps_per_epoch - start_step) * lb)  # before maps
    if self.batched:
      def augment(step, batch):
        images, labels = batch
        u = preprocess.draws(key, epoch, step * lb, lb)
        return {"image": prep(images, u), "label": labels}

      ds = ds.batch(lb, drop_remainder=True).enumerate(start=start_step)
      ds = ds.map(plain(augment), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
      def augment(position, example):
        image, label = example
        u = preprocess.draws(key, epoch, position, 1)
        return {"image": prep(image[None], u)[0], "label": label}

      ds = ds.enumerate(start=start_step * lb)
      ds = ds.map(plain(augment), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
      ds = ds.batch(lb, drop_remainder=True)
    ds = ds.prefetch(tf.data.AUTOTUNE).with_options(_options(self._threads))
    return ds.as_numpy_iterator()

  def eval_batches(self, split: str = "eval", views=None):
    """All of this process's share of the eval (or 'test') split in `eval_steps` (or
    `test_steps`) batches of eval_batch // process_count, the last zero-padded: dicts of
    image, label and mask float32 (1 real, 0 padding).

    With `views` (an evaluation protocol's, protocols.Views), each image is mapped by it
    instead: uint8 (B, h, w, C) -> {name: float32 (B, ...)}, one array per name of
    `views.shapes` in place of `image`, batched as `views.batched` says."""
    if split not in self._eval:
      raise ValueError(f"no {split} split in this pipeline")
    lb = self.eval_local_batch
    if views is None:
      prep, batched, shapes = (lambda x: {"image": self._prep(x)}), self.batched, {
          "image": self.image_shape}
    else:
      prep, batched, shapes = views, views.batched, views.shapes
    steps = self.eval_steps if split == "eval" else self.test_steps
    pad = steps * lb - self._local[split]
    ds = self._warmed(split, self._eval[split])
    if batched:  # pad with blank raw images, preprocess, then zero them
      def evaluate(images, labels, mask):
        out = {k: tf.where(mask[:, None, None, None] > 0, x, 0.0)
               for k, x in prep(images).items()}
        return {**out, "label": labels, "mask": mask}

      ds = ds.map(plain(lambda image, label: (image, label, tf.constant(1.0))))
      blank = (tf.zeros(self._source.image_shape, tf.uint8), tf.constant(0), tf.constant(0.0))
      ds = ds.concatenate(tf.data.Dataset.from_tensors(blank).repeat(pad))
      ds = ds.batch(lb, drop_remainder=True)
      ds = ds.map(plain(evaluate), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
      def evaluate(image, label):
        out = {k: x[0] for k, x in prep(image[None]).items()}
        return {**out, "label": label, "mask": tf.constant(1.0)}

      ds = ds.map(plain(evaluate), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
      zero = {**{k: tf.zeros(s, tf.float32) for k, s in shapes.items()},
              "label": tf.constant(0), "mask": tf.constant(0.0)}
      ds = ds.concatenate(tf.data.Dataset.from_tensors(zero).repeat(pad))
      ds = ds.batch(lb, drop_remainder=True)
    ds = ds.prefetch(tf.data.AUTOTUNE).with_options(_options(self._threads))
    return ds.as_numpy_iterator()

  @property
  def preprocessor(self):
    """The eval preprocessing (preprocess.Preprocessor), with its training-set statistics."""
    return self._prep

  @property
  def source_shape(self):
    """(h, w, C) of the decoded images, None where their sizes vary."""
    return self._source.image_shape


def preprocessor(p, image_shape, images, mean_mode: str, batched: bool):
  """The Preprocessor of the `data.preprocess` group `p`, with the statistics it needs
  computed from `images` (uint8, decoded, un-augmented; batched in 256s when `batched`, i.e.
  of one size before the crop)."""
  stats_ = {}
  if p.mean != "none" or p.std != "none" or p.pca_colour:
    precrop = preprocess.Preprocessor(p, image_shape, {}, "none").precrop
    images = images.batch(256 if batched else 1)
    images = images.map(plain(precrop), num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
    stats_ = stats.compute(images, pixel=mean_mode == "pixel", std_channel=p.std == "channel",
                           pca=bool(p.pca_colour))
  return preprocess.Preprocessor(p, image_shape, stats_, mean_mode)


def build(cfg, image_shape, global_batch: int, eval_batch: int, seed: int = 0,
          process_index: int = 0, process_count: int = 1) -> Dataset:
  """The pipeline of `cfg` (the `data` group) for a model taking `image_shape` (H, W, C)."""
  image_shape = tuple(int(d) for d in image_shape)
  validate(cfg, image_shape)
  check_batches(global_batch, eval_batch, process_index, process_count)
  _hide_gpus()
  h, w, c = image_shape
  if cfg.name == "folder":
    source = folder.load(cfg, c, process_index, process_count)
  else:
    source = tfds_source.load(cfg, c, process_index, process_count)
  if source.num_train < global_batch:
    raise UserError(f"data.train_split={cfg.train_split!r} has {source.num_train} examples, "
                    f"fewer than one global batch of {global_batch}; use a larger split or "
                    "a smaller batch")

  p = cfg.preprocess
  shape = preprocess.precrop_shape(p, source.image_shape)
  if shape and (shape[0] < h or shape[1] < w):
    raise ConfigError(f"data.preprocess.pad={p.pad}, resize={p.resize}: {cfg.name} images are "
                      f"{shape[0]}x{shape[1]}, smaller than the model's {h}x{w}; pad or "
                      "resize them to at least that")
  small = source.smallest
  if shape is None and small and not (p.resize or p.scale_jitter) and (
      small[0] + 2 * p.pad < h or small[1] + 2 * p.pad < w):
    raise ConfigError(f"data.folder: {small[2]} is {small[0]}x{small[1]}, smaller than the "
                      f"model's {h}x{w} input; set data.preprocess.resize (at least "
                      f"{max(h, w)}) or data.preprocess.pad, or remove the small images")
  mean_mode = p.mean
  if mean_mode == "pixel" and shape is None:
    logging.warning("data.preprocess.mean='pixel' needs one image size before the crop; these "
                    "images vary, so the per-channel mean is subtracted instead")
    mean_mode = "channel"

  batched = shape is not None  # one image size before the crop
  images = source.stats.take(p.stats_samples).map(plain(lambda image, _: image))
  prep = preprocessor(p, image_shape, images, mean_mode, batched)
  return Dataset(source, prep, global_batch=global_batch, eval_batch=eval_batch, seed=seed,
                 process_index=process_index, process_count=process_count,
                 shuffle_buffer=cfg.shuffle_buffer, cache=cfg.cache, batched=batched,
                 threads=cfg.threads)
