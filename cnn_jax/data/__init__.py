"""The input pipeline: TFDS datasets or image folders, sharded per process, deterministic and
resumable, with the papers' preprocessing (LeNet-5 padding, AlexNet Secs. 2 and 4.1, VGG
Secs. 2.1, 3.1 and 3.2).

  cfg = data.defaults()                         # the `data` config group
  data.validate(cfg, image_shape=(H, W, C))
  ds = data.build(cfg, (H, W, C), global_batch, eval_batch, seed, process_index, process_count)
  for batch in ds.train_batches(epoch, start_step): ...
  for batch in ds.eval_batches(): ...          # validation, with a padding mask
  for batch in ds.eval_batches("test"): ...    # the test split, once at the end

`data.input` picks the input path: 'arrays' (array_pipeline.py: a small TFDS dataset held in
memory, batched in NumPy, without TensorFlow), 'tf.data' (pipeline.py), or 'auto' (arrays
where they apply, else tf.data). TensorFlow is imported only by the tf.data path (and to build
the arrays' decoded cache once), not by importing this package.
"""

from __future__ import annotations

import os

from cnn_jax.data.config import defaults, seed, validate

VENDORED_FASHION_MNIST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor",
                                      "fashion_mnist") + os.sep


def build(cfg, image_shape, global_batch: int, eval_batch: int, seed: int = 0,
          process_index: int = 0, process_count: int = 1):
  """The pipeline of `cfg` for a model taking `image_shape`: a pipeline.Dataset with
  num_train, num_eval, num_classes, steps_per_epoch, eval_steps (the same on every process),
  stats, train_batches(epoch, start_step) and eval_batches(split). See pipeline.py."""
  from cnn_jax.data import array_pipeline
  if array_pipeline.applies(cfg):  # NumPy arrays, no TensorFlow (array_pipeline.py)
    return array_pipeline.build(cfg, image_shape, global_batch, eval_batch, seed,
                                process_index, process_count)
  from cnn_jax.data import pipeline
  return pipeline.build(cfg, image_shape, global_batch, eval_batch, seed, process_index,
                        process_count)


__all__ = ["VENDORED_FASHION_MNIST", "build", "defaults", "seed", "validate"]
