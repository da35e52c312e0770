"""Keras 3's side of benchmarks/peers.py: a case's network as a Keras model (TensorFlow
backend) and one timed measurement of its training step."""

from __future__ import annotations

import itertools
import math
import os
from functools import partial

import numpy as np

from benchmarks.peer_cases import BATCHES, Case, rbf_codes, selection, time_steps


def keras_model(case: Case, init: str = "glorot_uniform"):
  """The case as a keras.Sequential (NHWC). `init`: the conv/hidden kernel initialiser."""
  os.environ.setdefault("KERAS_BACKEND", "tensorflow")
  import keras
  import tensorflow as tf
  from keras import layers as K, ops

  class Subsampling(K.Layer):
    def build(self, shape):
      quarter = keras.initializers.Constant(0.25)
      self.coefficient = self.add_weight((shape[-1],), initializer=quarter)
      self.bias = self.add_weight((shape[-1],), initializer="zeros")

    def call(self, x):
      return ops.average_pool(x, 2, 2, "valid") * 4.0 * self.coefficient + self.bias

  class PartialConv(K.Layer):
    def __init__(self, table, kernel, **kw):
      super().__init__(**kw)
      self.table, self.size = table, kernel

    def build(self, shape):
      self.select = ops.convert_to_tensor(selection(self.table, shape[-1]))
      k = self.size
      self.kernel = self.add_weight((k, k, self.select.shape[0]), initializer="glorot_uniform")
      self.bias = self.add_weight((len(self.table),), initializer="zeros")

    def call(self, x):
      dense = ops.einsum("hwc,cio->hwio", self.kernel, self.select)
      return ops.conv(x, dense, padding="valid") + self.bias

  class RBF(K.Layer):
    def __init__(self, units, **kw):
      super().__init__(**kw)
      self.units = units

    def build(self, shape):
      codes = rbf_codes(shape[-1], self.units)
      self.centres = self.add_weight(codes.shape, trainable=False,
                                     initializer=keras.initializers.Constant(codes))

    def call(self, x):
      c = self.centres
      return -(ops.sum(x * x, -1, keepdims=True) - 2 * x @ c + ops.sum(c * c, 0))

  def lrn(groups):  # cnn_jax's LRN; TF's alpha is, like cnn_jax's, not divided by the size
    return K.Lambda(lambda x: tf.concat([tf.nn.local_response_normalization(
        t, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75) for t in tf.split(x, groups, -1)],
        -1))

  def scaled_tanh(x):
    return 1.7159 * ops.tanh(x * (2.0 / 3.0))

  def make(layer) -> list:
    """The Keras layers for `layer` (an explicitly padded convolution takes two)."""
    kind, *a = layer
    if kind == "conv":
      features, kernel, stride, padding, groups = a
      pad = []
      if isinstance(padding, int) and stride == 1 and 2 * padding == kernel - 1:
        padding = "same"
      elif isinstance(padding, int):
        pad, padding = [K.ZeroPadding2D(padding)], "valid"
      return pad + [K.Conv2D(features, kernel, stride, padding, groups=groups,
                             kernel_initializer=init)]
    if kind == "act":
      return [K.Activation("relu" if a[0] == "relu" else scaled_tanh)]
    return [{"pool": K.MaxPooling2D, "lrn": lrn, "dropout": K.Dropout, "flatten": K.Flatten,
             "dense": partial(K.Dense, kernel_initializer=init), "subsample": Subsampling,
             "partial_conv": PartialConv, "rbf": RBF}[kind](*a)]

  layers = [l for layer in case.layers for l in make(layer)]
  if case.layers[-1][0] == "dense":  # cnn_jax's output layers use LeCun normal
    layers[-1] = K.Dense(case.layers[-1][1], kernel_initializer="lecun_normal")
  return keras.Sequential([keras.Input(case.input_shape), *layers])


def keras_optimiser(case: Case, lr=1e-3):
  import keras
  if case.optimiser == "adam":
    return keras.optimizers.Adam(lr, epsilon=1e-8)  # optax's epsilon (Keras's default 1e-7)
  # Keras's weight decay is decoupled (w -= lr * wd * w), cnn_jax's is L2 added to the
  # gradient: the same cost per step. Biases are excluded in both.
  opt = keras.optimizers.SGD(0.01, momentum=0.9, weight_decay=5e-4)
  opt.exclude_from_weight_decay(var_names=["bias"])
  return opt


def keras_worker(case: Case, seconds: float, min_steps: int, params_only: bool,
                 jit: str = "auto") -> dict:
  """Times train_on_batch with jit_compile off and on (or as `jit` says); keeps the faster."""
  os.environ.setdefault("KERAS_BACKEND", "tensorflow")
  import keras
  import tensorflow as tf
  keras.utils.set_random_seed(0)
  model = keras_model(case)
  result = {"params": sum(math.prod(w.shape) for w in model.trainable_weights),
            "constants": sum(math.prod(w.shape) for w in model.non_trainable_weights),
            "version": f"keras {keras.__version__}, tensorflow {tf.__version__}"}
  if params_only:
    return result
  rng = np.random.default_rng(0)
  xs = [tf.constant(rng.standard_normal((case.batch, *case.input_shape), dtype=np.float32))
        for _ in range(BATCHES)]
  ys = [tf.constant(rng.integers(0, case.num_classes, case.batch), tf.int32)
        for _ in range(BATCHES)]
  turn = itertools.count()

  def step():
    i = next(turn) % BATCHES
    return model.train_on_batch(xs[i], ys[i])
  for flag in {"auto": (False, True), "on": (True,), "off": (False,)}[jit]:
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = keras_model(case)
    model.compile(keras_optimiser(case), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), jit_compile=flag)
    timing = time_steps(step, case.batch, seconds, min_steps)
    result[f"images_per_sec[jit_compile={flag}]"] = timing["images_per_sec"]
    if timing["images_per_sec"] > result.get("images_per_sec", 0.0):
      result.update(timing, jit_compile=flag)
  return result
