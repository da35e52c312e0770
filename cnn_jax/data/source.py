"""What a dataset source hands the pipeline: this process's shares, decoded, and the counts."""

from __future__ import annotations

import dataclasses

import tensorflow as tf


@dataclasses.dataclass
class Source:
  """Decoded examples as (image uint8 (h, w, C), label int32) datasets, in a fixed order.

  train, eval, test: this process's shares of the train, eval (validation: what runs are
    selected on) and test splits, disjoint across processes; test is None without a test split.
  stats: process 0's share of the train split, read by every process for the statistics.
  num_train, num_eval, num_test: global counts; local_train, local_eval, local_test: this
    process's.
  image_shape: (h, w, C) of the decoded images, None where sizes vary.
  smallest: where sizes vary, (h, w, path) of the image with the shortest side, if known.
  held_out: (count, sha256) of the validation split held out of the training data, or None.
  """

  train: tf.data.Dataset
  eval: tf.data.Dataset
  stats: tf.data.Dataset
  num_classes: int
  num_train: int
  num_eval: int
  local_train: int
  local_eval: int
  image_shape: tuple
  smallest: tuple | None = None
  test: tf.data.Dataset | None = None
  num_test: int = 0
  local_test: int = 0
  held_out: tuple | None = None
