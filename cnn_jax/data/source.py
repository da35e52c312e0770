"""What a dataset source hands the pipeline: this process's shares, decoded, and the counts."""

from __future__ import annotations

import dataclasses

import tensorflow as tf


@dataclasses.dataclass
class Source:
  """Decoded examples as (image uint8 (h, w, C), label int32) datasets, in a fixed order.

  train, eval: this process's shares of the train and eval splits (disjoint across processes).
  stats: process 0's share of the train split, read by every process for the statistics.
  num_train, num_eval: global counts; local_train, local_eval: this process's.
  image_shape: (h, w, C) of the decoded images, None where sizes vary.
  smallest: where sizes vary, (h, w, path) of the image with the shortest side, if known.
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
